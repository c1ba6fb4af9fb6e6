//! Runs the reconfiguration scenario files in `testdata/`.
//!
//! Format: one command per line; `#` starts a comment. Setup commands change the cluster or
//! the leader's view and expect nothing:
//!
//! ```text
//! cluster voters=1,2,3 learners=4     a fresh cluster (peer URL of member N: http://mN:2380)
//! leader 1                            the leader deciding changes
//! index 100                           the leader's last log index
//! reachable 2,3                       the members the leader hears from (replaces the set)
//! match 4=95 2=100                    match indexes
//! config learners-max=1 strict=off    rule configuration
//! ```
//!
//! Change commands are followed by one line starting with `> `: either
//! `> ok: <cluster after> | <steps>` or `> error: <exact error text>`.
//!
//! ```text
//! add 5 learner [url...]   add 5 voter [url...]   promote 4   remove 1
//! update 2 http://x:2380   replace 3 with 4
//! ```

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns panic on broken fixtures"
)]

use keel_membership::{
    ChangeRequest, Cluster, LogIndex, Member, MemberUrl, Plan, ReconfigConfig, ReconfigContext,
    ReconfigRules,
};
use keel_types::{ClusterId, MemberId};
use std::collections::BTreeSet;
use std::path::Path;

struct Harness {
    cluster: Option<Cluster>,
    ctx: ReconfigContext,
    rules: ReconfigRules,
}

fn id(text: &str) -> MemberId {
    MemberId::new(u64::from_str_radix(text, 16).unwrap_or_else(|_| panic!("bad id {text:?}")))
}

fn ids(text: &str) -> Vec<MemberId> {
    text.split(',').filter(|s| !s.is_empty()).map(id).collect()
}

fn default_url(member: MemberId) -> MemberUrl {
    MemberUrl::parse(&format!("http://m{member}:2380")).unwrap()
}

fn urls_or_default(words: &[&str], member: MemberId) -> Vec<MemberUrl> {
    if words.is_empty() {
        vec![default_url(member)]
    } else {
        words.iter().map(|w| MemberUrl::parse(w).unwrap()).collect()
    }
}

impl Harness {
    fn new() -> Self {
        Harness {
            cluster: None,
            ctx: ReconfigContext::new(MemberId::new(1), LogIndex::new(100)),
            rules: ReconfigRules::default(),
        }
    }

    /// Run a setup command; `false` when `words` is a change command.
    fn setup(&mut self, words: &[&str]) -> bool {
        match words {
            ["cluster", args @ ..] => {
                let (mut voters, mut learners) = (Vec::new(), Vec::new());
                for arg in args {
                    match arg.split_once('=') {
                        Some(("voters", v)) => voters = ids(v),
                        Some(("learners", v)) => learners = ids(v),
                        _ => panic!("bad cluster argument {arg:?}"),
                    }
                }
                let member = |m: MemberId, l| Member::new(m, vec![default_url(m)], l).unwrap();
                let members = voters
                    .iter()
                    .map(|m| member(*m, false))
                    .chain(learners.iter().map(|m| member(*m, true)));
                self.cluster = Some(
                    Cluster::new(ClusterId::new(0xc1), members.collect(), BTreeSet::new()).unwrap(),
                );
            }
            ["leader", l] => self.ctx.leader = id(l),
            ["index", i] => self.ctx.leader_last_index = LogIndex::new(i.parse().unwrap()),
            ["reachable", rest @ ..] => {
                self.ctx.reachable = rest.iter().flat_map(|r| ids(r)).collect()
            }
            ["match", pairs @ ..] => {
                for pair in pairs {
                    let (m, i) = pair.split_once('=').unwrap();
                    self.ctx
                        .matched
                        .insert(id(m), LogIndex::new(i.parse().unwrap()));
                }
            }
            ["config", args @ ..] => {
                let mut config = ReconfigConfig::default();
                for arg in args {
                    match arg.split_once('=') {
                        Some(("learners-max", v)) => config.learners_max = v.parse().unwrap(),
                        Some(("strict", v)) => config.strict_reconfig_check = v == "on",
                        _ => panic!("bad config argument {arg:?}"),
                    }
                }
                self.rules = ReconfigRules::new(config).unwrap();
            }
            _ => return false,
        }
        true
    }

    fn request(words: &[&str]) -> ChangeRequest {
        match words {
            ["add", m, role, urls @ ..] => ChangeRequest::Add {
                id: id(m),
                peer_urls: urls_or_default(urls, id(m)),
                is_learner: match *role {
                    "learner" => true,
                    "voter" => false,
                    other => panic!("bad role {other:?}"),
                },
            },
            ["promote", m] => ChangeRequest::Promote { id: id(m) },
            ["remove", m] => ChangeRequest::Remove { id: id(m) },
            ["update", m, urls @ ..] => ChangeRequest::UpdatePeerUrls {
                id: id(m),
                peer_urls: urls.iter().map(|w| MemberUrl::parse(w).unwrap()).collect(),
            },
            ["replace", old, "with", learner] => ChangeRequest::Replace {
                old: id(old),
                learner: id(learner),
            },
            other => panic!("unknown command {other:?}"),
        }
    }

    fn run_change(&mut self, words: &[&str]) -> String {
        let cluster = self.cluster.as_mut().expect("a `cluster` line comes first");
        match self.rules.plan(cluster, &self.ctx, Self::request(words)) {
            Ok(Plan {
                change,
                steps,
                next,
                removes_leader,
            }) => {
                let mut applied = cluster.clone();
                applied.apply(&change).unwrap();
                assert_eq!(applied, next, "plan.next must equal applying plan.change");
                next.check_invariants().unwrap();
                assert!(!next.removed().iter().any(|r| next.member(*r).is_some()));
                *cluster = next;
                let steps: Vec<String> = steps.iter().map(ToString::to_string).collect();
                let leader = if removes_leader {
                    " (leader removed)"
                } else {
                    ""
                };
                format!("ok: {cluster} | {}{leader}", steps.join("; "))
            }
            Err(e) => format!("error: {e}"),
        }
    }
}

fn run_file(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut harness = Harness::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut changes = 0;
    while let Some((n, line)) = lines.next() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        assert!(
            !line.starts_with('>'),
            "{}:{}: expectation without a command",
            path.display(),
            n + 1
        );
        let words: Vec<&str> = line.split_whitespace().collect();
        if harness.setup(&words) {
            continue;
        }
        let got = harness.run_change(&words);
        changes += 1;
        let want = match lines.next() {
            Some((_, l)) if l.trim_start().starts_with("> ") => {
                l.trim_start()[2..].trim().to_owned()
            }
            _ => panic!(
                "{}:{}: `{line}` needs a `> expected` line",
                path.display(),
                n + 1
            ),
        };
        if got != want {
            failures.push(format!(
                "{}:{}: {line}\n  want: {want}\n  got:  {got}",
                path.display(),
                n + 1
            ));
        }
    }
    assert!(changes > 0, "{} holds no change command", path.display());
    failures
}

#[test]
fn scenario_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected the scenario files in {}",
        dir.display()
    );
    let failures: Vec<String> = files.iter().flat_map(|f| run_file(f)).collect();
    assert!(
        failures.is_empty(),
        "{} scenario mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
