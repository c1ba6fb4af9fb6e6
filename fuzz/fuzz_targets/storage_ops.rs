//! Byte-driven sequences of put / delete / txn (compare-and-swap) / compact / reopen / power
//! cut on the MVCC store over the in-memory engine, against a model that keeps the whole
//! keyspace after every revision: every historical read at or above the compaction, every
//! compacted or future read's error, and every response's revision must agree.
#![no_main]

use bytes::Bytes;
use keel_storage::engine::{Durability, MemEngine};
use keel_storage::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, KeyValue, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use keel_storage::{MvccStore, StorageError};
use keel_types::{KeyRange, Revision};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<Bytes, KeyValue>;

/// The keyspace after each revision, from revision 1 (empty) on.
struct Model {
    states: Vec<State>,
    compacted: u64,
}

impl Model {
    fn current(&self) -> u64 {
        self.states.len() as u64
    }
    fn latest(&self) -> &State {
        &self.states[self.states.len() - 1]
    }
    /// One new revision: puts (key, value) then deletes keys, like one write request.
    fn write(&mut self, puts: &[(Bytes, Bytes)], deletes: &[Bytes]) {
        let rev = Revision::new(self.current() + 1);
        let mut next = self.latest().clone();
        for key in deletes {
            next.remove(key);
        }
        for (key, value) in puts {
            let (create_revision, version) = match next.get(key) {
                Some(kv) => (kv.create_revision, kv.version + 1),
                None => (rev, 1),
            };
            let kv = KeyValue {
                key: key.clone(),
                create_revision,
                mod_revision: rev,
                version,
                value: value.clone(),
                lease: None,
            };
            next.insert(key.clone(), kv);
        }
        self.states.push(next);
    }
}

fn key(b: u8) -> Bytes {
    Bytes::from(format!("k{}", b % 6))
}

fn open(engine: MemEngine) -> (Arc<MemEngine>, MvccStore) {
    let engine = Arc::new(engine);
    let store = MvccStore::open_with(engine.clone(), Default::default(), Durability::Synced)
        .expect("a store reopens on its own synced data");
    (engine, store)
}

fn check_read(store: &MvccStore, model: &Model, at: u64) {
    let req = RangeRequest {
        revision: (at != 0).then(|| Revision::new(at)),
        ..RangeRequest::new(KeyRange::all())
    };
    let got = store.range(&req);
    let at = if at == 0 { model.current() } else { at };
    match got {
        Ok(resp) if at >= model.compacted.max(1) && at <= model.current() => {
            let want: Vec<&KeyValue> = model.states[(at - 1) as usize].values().collect();
            let have: Vec<&KeyValue> = resp.kvs.iter().collect();
            assert_eq!(have, want, "read at {at}");
        }
        Err(StorageError::Compacted { .. }) => assert!(at < model.compacted, "at {at}"),
        Err(StorageError::FutureRevision { .. }) => assert!(at > model.current(), "at {at}"),
        other => panic!("read at {at} (current {}, compacted {}): {other:?}", model.current(), model.compacted),
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut engine, mut store) = open(MemEngine::new(&MvccStore::COLUMN_FAMILIES));
    let mut model = Model { states: vec![State::new()], compacted: 0 };
    for c in data.chunks_exact(3) {
        let (k, v) = (key(c[1]), Bytes::copy_from_slice(&c[2..3]));
        match c[0] % 7 {
            0 | 1 => {
                let resp = store.put(PutRequest::new(k.clone(), v.clone())).expect("put");
                model.write(&[(k, v)], &[]);
                assert_eq!(resp.revision.get(), model.current());
            }
            2 => {
                let req = DeleteRequest { range: KeyRange::key(k.clone()), prev_kv: false };
                let resp = store.delete_range(&req).expect("delete");
                let existed = model.latest().contains_key(&k);
                assert_eq!(resp.deleted, u64::from(existed));
                if existed {
                    model.write(&[], &[k]);
                }
            }
            3 => {
                // compare-and-swap: if k's value is v then put k2 else delete k
                let k2 = key(c[2]);
                let req = TxnRequest {
                    compare: vec![Compare {
                        range: KeyRange::key(k.clone()),
                        op: CompareOp::Equal,
                        target: CompareTarget::Value(v.clone()),
                    }],
                    success: vec![RequestOp::Put(PutRequest::new(k2.clone(), v.clone()))],
                    failure: vec![RequestOp::Delete(DeleteRequest { range: KeyRange::key(k.clone()), prev_kv: false })],
                };
                let resp = store.txn(&req).expect("txn");
                let matches = model.latest().get(&k).is_some_and(|kv| kv.value == v);
                assert_eq!(resp.succeeded, matches);
                if matches {
                    model.write(&[(k2, v)], &[]);
                } else if model.latest().contains_key(&k) {
                    model.write(&[], &[k]);
                }
            }
            4 => {
                let at = u64::from(c[1]) % (model.current() + 3);
                match store.compact(Revision::new(at), true) {
                    Ok(_) => {
                        assert!(at > model.compacted && at <= model.current(), "compact {at}");
                        model.compacted = at;
                    }
                    Err(StorageError::Compacted { .. }) => assert!(at <= model.compacted),
                    Err(StorageError::FutureRevision { .. }) => assert!(at > model.current()),
                    Err(e) => panic!("compact {at}: {e:?}"),
                }
            }
            5 => {
                // a clean restart, or a power cut: every write here is synced, nothing is lost
                let image = if c[1] % 2 == 0 { engine.reopen(&[]) } else { engine.crash() };
                drop(store);
                (engine, store) = open(image);
            }
            _ => check_read(&store, &model, u64::from(c[1]) % (model.current() + 3)),
        }
    }
    check_read(&store, &model, 0);
});
