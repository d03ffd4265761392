use guard_core::Limits;
use guard_validate::{DomainSchema, Judge};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A judge with the repository's Shuttle and MNIST schemas under `limits`.
pub fn judge(limits: Limits) -> Judge {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut routes = HashMap::new();
    for (topic, file) in [("shuttle", "shuttle.schema.json"), ("mnist", "mnist.schema.json")] {
        let schema = DomainSchema::load(&root.join(file)).expect("schema loads");
        routes.insert(topic.to_owned(), Arc::new(schema));
    }
    Judge::new(limits, routes)
}
