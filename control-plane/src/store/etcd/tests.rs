//! What only the etcd store does.
