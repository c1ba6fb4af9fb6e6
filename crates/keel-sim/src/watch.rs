//! The watch checker: etcd's watch guarantees over what one watcher received.
//!
//! etcd documents these guarantees for a watch (API guarantees, "Watch APIs"):
//! - **ordered**: events are ordered by revision; an event never appears before one of an
//!   earlier revision;
//! - **unique**: an event is never delivered twice;
//! - **atomic**: the events of one revision (a txn's several keys) arrive in one response;
//! - **reliable**: no event between two delivered ones is skipped;
//! - **resumable**: a watch started again at any revision not yet compacted receives the
//!   events from that revision on.
//!
//! [`check_watch`] checks the first four, and that what was received is exactly the
//! cluster's event log (the `reference`) from the start revision on, cut where the watcher
//! stopped — which makes it consistent with every other watcher and with the KV history.
//! A resumed watch is checked by the same function with its own start revision.
//! [`check_acknowledged`] ties the reference to the clients' acknowledged writes.

use std::collections::HashSet;

/// One watch event, as the checker needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// The revision of the change.
    pub revision: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A broken watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchViolation {
    /// An event came after one of a later revision.
    OutOfOrder {
        /// The earlier-delivered, later revision.
        after: u64,
        /// The late event.
        event: WatchEvent,
    },
    /// The same (revision, key) was delivered twice.
    Duplicate {
        /// The repeated event.
        event: WatchEvent,
    },
    /// A revision's events were split over two responses.
    Split {
        /// The revision.
        revision: u64,
    },
    /// The delivered events differ from the reference log at this position (a skipped,
    /// extra or altered event).
    Diverged {
        /// Position in the delivered events.
        position: usize,
        /// What the reference has there (`None`: the reference ended).
        expected: Option<WatchEvent>,
        /// What was delivered.
        got: WatchEvent,
    },
    /// The watcher saw revisions up to `seen` but misses reference events before that.
    Gap {
        /// The first reference event not delivered.
        missing: WatchEvent,
        /// The highest revision the watcher had received.
        seen: u64,
    },
    /// An acknowledged write is not in the event log, or is there with other contents.
    Unlogged {
        /// The acknowledged write, as an event.
        write: WatchEvent,
    },
}

/// Check the responses one watcher received (each inner vector is one response, in
/// arrival order) against `reference`, the full event log in revision order, for a watch
/// that started at `start` (the first revision it asked for).
///
/// # Examples
/// ```
/// use keel_sim::{check_watch, WatchEvent, WatchViolation};
/// let ev = |revision, key: &str| WatchEvent { revision, key: key.into(), value: Some(b"v".to_vec()) };
/// let log = vec![ev(2, "a"), ev(3, "a"), ev(3, "b"), ev(4, "c")];
/// // Revision 3 (a txn of two keys) in one response, the watch cut after it: fine.
/// assert_eq!(check_watch(&[vec![ev(2, "a")], vec![ev(3, "a"), ev(3, "b")]], &log, 2), Ok(()));
/// // Revision 3 split over two responses.
/// assert_eq!(
///     check_watch(&[vec![ev(3, "a")], vec![ev(3, "b")]], &log, 3),
///     Err(WatchViolation::Split { revision: 3 })
/// );
/// ```
///
/// # Errors
/// The first broken guarantee found.
pub fn check_watch(
    responses: &[Vec<WatchEvent>],
    reference: &[WatchEvent],
    start: u64,
) -> Result<(), WatchViolation> {
    let mut seen: HashSet<(u64, &[u8])> = HashSet::new();
    let mut last = 0u64;
    let mut closed_before = 0u64;
    for response in responses {
        let mut first_here = None;
        for event in response {
            if event.revision < last {
                return Err(WatchViolation::OutOfOrder {
                    after: last,
                    event: event.clone(),
                });
            }
            if !seen.insert((event.revision, &event.key)) {
                return Err(WatchViolation::Duplicate {
                    event: event.clone(),
                });
            }
            if event.revision <= closed_before {
                return Err(WatchViolation::Split {
                    revision: event.revision,
                });
            }
            first_here.get_or_insert(event.revision);
            last = event.revision;
        }
        // Every revision delivered so far is complete once a response ends.
        if first_here.is_some() {
            closed_before = last;
        }
    }
    let expected: Vec<&WatchEvent> = reference.iter().filter(|e| e.revision >= start).collect();
    let got: Vec<&WatchEvent> = responses.iter().flatten().collect();
    for (position, event) in got.iter().enumerate() {
        if expected.get(position) != Some(event) {
            return Err(WatchViolation::Diverged {
                position,
                expected: expected.get(position).map(|e| (*e).clone()),
                got: (*event).clone(),
            });
        }
    }
    // Nothing of a revision the watcher has passed may be missing at the end.
    if let Some(missing) = expected.get(got.len()) {
        if missing.revision <= last {
            return Err(WatchViolation::Gap {
                missing: (*missing).clone(),
                seen: last,
            });
        }
    }
    Ok(())
}

/// Check that every acknowledged write (`(revision, key, value)`; `value` `None` for a
/// delete that removed the key) is in the event log at its revision with its contents.
///
/// # Examples
/// ```
/// use keel_sim::{check_acknowledged, WatchEvent};
/// let log = vec![WatchEvent { revision: 2, key: b"a".to_vec(), value: Some(b"1".to_vec()) }];
/// assert!(check_acknowledged(&log, &[log[0].clone()]).is_ok());
/// let lost = WatchEvent { revision: 3, key: b"a".to_vec(), value: Some(b"2".to_vec()) };
/// assert!(check_acknowledged(&log, &[lost]).is_err());
/// ```
///
/// # Errors
/// [`WatchViolation::Unlogged`] for the first write missing from the log.
pub fn check_acknowledged(
    reference: &[WatchEvent],
    writes: &[WatchEvent],
) -> Result<(), WatchViolation> {
    let logged: HashSet<&WatchEvent> = reference.iter().collect();
    match writes.iter().find(|w| !logged.contains(w)) {
        Some(write) => Err(WatchViolation::Unlogged {
            write: write.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64, key: &str) -> WatchEvent {
        WatchEvent {
            revision,
            key: key.as_bytes().to_vec(),
            value: Some(format!("{key}{revision}").into_bytes()),
        }
    }

    fn log() -> Vec<WatchEvent> {
        vec![ev(2, "a"), ev(3, "a"), ev(3, "b"), ev(5, "c"), ev(6, "a")]
    }

    #[test]
    fn an_exact_suffix_in_any_grouping_of_whole_revisions_passes() {
        let log = log();
        assert_eq!(check_watch(std::slice::from_ref(&log), &log, 1), Ok(()));
        assert_eq!(
            check_watch(
                &[vec![ev(3, "a"), ev(3, "b")], vec![ev(5, "c")], vec![]],
                &log,
                3
            ),
            Ok(())
        );
        // Resumed from a revision with no event of its own.
        assert_eq!(
            check_watch(&[vec![ev(5, "c"), ev(6, "a")]], &log, 4),
            Ok(())
        );
        assert_eq!(check_watch(&[], &log, 2), Ok(()));
    }

    #[test]
    fn reordered_events_are_out_of_order() {
        let log = log();
        let got = check_watch(
            &[vec![ev(2, "a")], vec![ev(5, "c")], vec![ev(3, "a")]],
            &log,
            2,
        );
        assert!(matches!(
            got,
            Err(WatchViolation::OutOfOrder { after: 5, .. })
        ));
    }

    #[test]
    fn a_repeated_event_is_a_duplicate() {
        let log = log();
        let got = check_watch(&[vec![ev(2, "a")], vec![ev(2, "a")]], &log, 2);
        assert!(matches!(got, Err(WatchViolation::Duplicate { .. })));
    }

    #[test]
    fn a_revision_split_over_responses_is_not_atomic() {
        let log = log();
        let got = check_watch(&[vec![ev(2, "a"), ev(3, "a")], vec![ev(3, "b")]], &log, 2);
        assert_eq!(got, Err(WatchViolation::Split { revision: 3 }));
    }

    #[test]
    fn a_skipped_event_is_caught_inside_and_at_the_end() {
        let log = log();
        // Skipped in the middle: the next delivered event diverges from the log.
        let got = check_watch(&[vec![ev(2, "a")], vec![ev(5, "c")]], &log, 2);
        assert!(matches!(
            got,
            Err(WatchViolation::Diverged { position: 1, .. })
        ));
        // The last key of a revision dropped (and the response ends there): a gap.
        let got = check_watch(&[vec![ev(2, "a"), ev(3, "a")]], &log, 2);
        assert!(matches!(got, Err(WatchViolation::Gap { seen: 3, .. })));
    }

    #[test]
    fn an_altered_or_invented_event_diverges() {
        let log = log();
        let mut altered = ev(2, "a");
        altered.value = Some(b"other".to_vec());
        let got = check_watch(&[vec![altered]], &log, 2);
        assert!(matches!(
            got,
            Err(WatchViolation::Diverged { position: 0, .. })
        ));
        let got = check_watch(&[log.clone(), vec![ev(9, "z")]], &log, 1);
        assert!(matches!(
            got,
            Err(WatchViolation::Diverged { expected: None, .. })
        ));
    }

    #[test]
    fn a_start_revision_that_is_not_honoured_diverges() {
        let log = log();
        // Asked from 3, got 2 as well.
        let got = check_watch(std::slice::from_ref(&log), &log, 3);
        assert!(matches!(
            got,
            Err(WatchViolation::Diverged { position: 0, .. })
        ));
    }

    #[test]
    fn acknowledged_writes_must_be_logged_as_written() {
        let log = log();
        assert_eq!(check_acknowledged(&log, &[ev(3, "b"), ev(6, "a")]), Ok(()));
        let mut wrong_value = ev(5, "c");
        wrong_value.value = None;
        assert!(matches!(
            check_acknowledged(&log, &[wrong_value]),
            Err(WatchViolation::Unlogged { .. })
        ));
    }
}
