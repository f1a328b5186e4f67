//! Recovering a partition: its committed history, named by its commit
//! record, read from the checkpoint store and replayed into the engine.

use std::sync::Arc;

use statefun_engine::partition::restore::Restorer;
use statefun_engine::partition::{Catalog, Partition};
use statefun_proto::internal::PartitionManifest;

use super::{BlobStore, CheckpointError};

/// Recovers a partition from the history its commit record names.
pub async fn recover(
    blobs: &dyn BlobStore,
    id: u32,
    partitions: u32,
    catalog: Arc<dyn Catalog>,
    manifest: &PartitionManifest,
) -> Result<Partition, CheckpointError> {
    let mut restorer = Restorer::new(id, partitions, catalog);
    super::replay_history(blobs, id, manifest, &mut restorer).await?;
    Ok(restorer.finish())
}

#[cfg(test)]
mod tests {
    use statefun_proto::internal::{AddressEntry, StoredState};
    use statefun_proto::reqreply::TypedValue;

    use statefun_engine::address::FunctionType;
    use statefun_engine::partition::{BatchLimits, Effect};
    use statefun_proto::internal::{Envelope, EpochRecord};
    use statefun_proto::reqreply::FromFunction;
    use statefun_proto::reqreply::from_function::{DelayedInvocation, InvocationResponse, Response};

    use super::*;
    use crate::checkpoint::fs::FsBlobStore;
    use crate::checkpoint::{READ_CHUNK_BYTES, object_key};
    use crate::partition::{NoEndpoints, SealedEpoch};

    fn entry(i: usize, fill: u8) -> AddressEntry {
        let value = TypedValue { typename: "t/blob".into(), has_value: true, value: vec![fill; 100] };
        AddressEntry {
            address: Some(FunctionType::new("ns", "f").address(format!("a{i}"))),
            states: vec![StoredState { name: "s".into(), value: Some(value), written_at_ms: 1, accessed_at_ms: 2 }],
            ..Default::default()
        }
    }

    fn sealed(epoch: u64, snapshot: bool, addresses: Vec<AddressEntry>) -> Vec<u8> {
        let record = EpochRecord { partition: 0, epoch, snapshot, addresses, ..Default::default() };
        let entries = Default::default();
        let (timers, outboxes, parked, released, live_parked) = Default::default();
        SealedEpoch { record, entries, timers, outboxes, parked, released, live_parked }.encode()
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_a_read_chunk_is_recovered_from_files_with_its_deltas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        let count = 60_000;
        let snapshot = sealed(1, true, (0..count).map(|i| entry(i, 1)).collect());
        assert!(snapshot.len() > 2 * READ_CHUNK_BYTES, "the snapshot spans several chunks");
        store.put(&object_key(0, 1, 7, true), snapshot.into()).await.expect("put snapshot");
        store.put(&object_key(0, 2, 7, false), sealed(2, false, vec![entry(5, 2)]).into()).await.expect("put delta");

        let manifest = PartitionManifest { epoch: 2, snapshot_epoch: 1, lease: 7 };
        let p = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.expect("recovers");
        assert_eq!(p.address_count(), count);
        assert_eq!(p.epoch(), 3);
        let value = |i: usize| {
            let states = p.states_of(&FunctionType::new("ns", "f").address(format!("a{i}"))).unwrap_or_default();
            states.first().and_then(|s| s.value.clone()).map(|v| v.value[0])
        };
        assert_eq!(value(count - 1), Some(1));
        assert_eq!(value(5), Some(2), "the delta applied after the snapshot");

        store
            .put(&object_key(0, 2, 7, false), bytes::Bytes::from_static(b"\x0a\xff"))
            .await
            .expect("overwrite the delta");
        let broken = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.err().map(|e| e.to_string());
        let named = broken.is_some_and(|e| e.contains("epoch-00000000000000000002") && e.contains("corrupt"));
        assert!(named, "a damaged delta is named");
    }

    #[tokio::test]
    async fn a_snapshot_whose_count_is_absurd_is_corrupt_and_takes_no_memory_on_its_word() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path());
        // A count that claims 2^40 addresses, then one address entry (the record's field 4).
        let record =
            EpochRecord { partition: 0, epoch: 1, snapshot: true, address_count: 1 << 40, ..Default::default() };
        let mut bytes = prost::Message::encode_to_vec(&record);
        prost::encoding::message::encode(4, &entry(3, 9), &mut bytes);
        store.put(&object_key(0, 1, 7, true), bytes.into()).await.expect("put snapshot");
        let manifest = PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 7 };
        let error = recover(&store, 0, 1, Arc::new(NoEndpoints), &manifest).await.err().map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(error.contains("corrupt"), "{error}");
        assert!(error.contains("says it holds 1099511627776 address entries but holds 1"), "{error}");
    }

    /// Invokes `test/*` functions three messages at a time.
    struct TestCatalog;

    impl Catalog for TestCatalog {
        fn batch_limits(&self, function_type: &FunctionType) -> Option<BatchLimits> {
            (function_type.namespace == "test").then_some(BatchLimits { max_messages: 3, max_bytes: 1 << 20 })
        }
        fn has_egress(&self, _: &str, _: &str) -> bool {
            false
        }
        fn is_internal_stream(&self, _: &str) -> bool {
            false
        }
    }

    fn message(id: &str, n: u32) -> Envelope {
        let argument = TypedValue { typename: "test/n".into(), has_value: true, value: n.to_le_bytes().to_vec() };
        let target = FunctionType::new("test", "fn").address(id);
        Envelope {
            target: Some(target),
            caller: None,
            argument: Some(argument),
            id: format!("m{n}"),
            hops: 0,
            ingress: None,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a damaged checkpoint object holds (bytes flipped, cut short),
        /// recovering from it ends in the history or in an error: never a panic.
        #[test]
        fn a_damaged_checkpoint_object_is_an_error_never_a_panic(
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            cut_it in proptest::prelude::any::<bool>(),
        ) {
            let catalog: Arc<dyn Catalog> = Arc::new(TestCatalog);
            let mut p = Partition::new(0, 1, catalog.clone(), 1);
            for (i, id) in ["a", "b", "c"].iter().enumerate() {
                p.deliver(message(id, i as u32), 0);
            }
            let Some(Effect::Invoke { address, token, .. }) = p.take_effects().into_iter().next() else {
                panic!("the first message starts an invocation");
            };
            let delayed = DelayedInvocation {
                delay_in_ms: 500,
                target: Some(FunctionType::new("test", "fn").address("b")),
                argument: message("b", 9).argument,
                cancellation_token: "t".into(),
                ..Default::default()
            };
            let reply = InvocationResponse { delayed_invocations: vec![delayed], ..Default::default() };
            p.on_invocation_result(&address, token, Ok(FromFunction { response: Some(Response::InvocationResult(reply)) }), 0);
            p.deliver(message("a", 7), 0);
            p.advance_position("in", "shard-0000", "42");
            let mut bytes = p.seal(true).0.encode();
            for (at, byte) in &flips {
                let at = at.index(bytes.len());
                bytes[at] ^= byte;
            }
            if cut_it {
                bytes.truncate(cut.index(bytes.len()));
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let store = FsBlobStore::new(dir.path());
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio");
            let manifest = PartitionManifest { epoch: 1, snapshot_epoch: 1, lease: 1 };
            let outcome = runtime.block_on(async {
                store.put(&object_key(0, 1, 1, true), bytes.into()).await.expect("put");
                recover(&store, 0, 1, catalog, &manifest).await.map(|p| p.address_count())
            });
            if let Err(e) = outcome {
                proptest::prop_assert!(e.to_string().contains("epoch-00000000000000000001"), "the error names the object: {}", e);
            }
        }
    }
}
