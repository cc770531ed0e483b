//! Unit tests of the resource layer over the in-memory store.

use troupe_common::pb::v1alpha1 as pb;

use super::*;
use crate::store::MemoryStore;

fn mk_namespace(name: &str) -> Object {
    pb::Namespace {
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

#[tokio::test]
async fn typed_reads_return_the_generated_type_and_refuse_another() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    for name in ["acme", "zeta"] {
        resources.apply(mk_namespace(name), false).await.unwrap();
    }
    let key = ObjectKey::new(Kind::Namespace, "", "acme");
    let namespace: pb::Namespace = resources.get_as(&key).unwrap();
    assert_eq!(namespace.metadata.unwrap().name, "acme");

    let err = resources.get_as::<pb::Component>(&key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stored Namespace acme could not be decoded: it holds a Namespace, not a Component"
    );
    let missing = ObjectKey::new(Kind::Namespace, "", "nope");
    assert!(matches!(
        resources.get_as::<pb::Namespace>(&missing),
        Err(Error::NotFound(_))
    ));

    let all: Vec<pb::Namespace> = resources.list_as("", &Default::default()).await.unwrap();
    let names: Vec<String> = all.into_iter().map(|n| n.metadata.unwrap().name).collect();
    assert_eq!(names, ["acme", "zeta"]);
}
