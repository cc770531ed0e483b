//! Integrity checks that read other objects: every reference of a write resolves and fits
//! (creation order, owners that agree, and what each kind checks in the objects it points at:
//! workload types, allowed traits and workflows, schemas), and the referrers of an object
//! about to be deleted. Both walk the graph [`references`] describes. A write requires its
//! references' targets still to exist when it commits, so one that loses a race with another
//! server's delete fails as it would have failed a moment later ([`lost_race`]).

use std::collections::HashMap;
use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::references::{Reference, references};
use super::validate::struct_to_json as to_json;
use super::{Error, Resources, decode, kinds};
use crate::render::schema::describe;
use crate::store::{Precondition, Record, Revision, StoreError, Txn};

/// Most encoded bytes of the objects [`Resources::decoded`] keeps; past it, it starts over.
const DECODED_BYTES: usize = 32 * 1024 * 1024;

/// Objects decoded once per revision, by key, and the encoded bytes decoded since it last
/// started over (replaced revisions included: a bound, not a measure).
#[derive(Default)]
pub(super) struct Decoded {
    objects: HashMap<ObjectKey, Arc<Object>>,
    bytes: usize,
}

/// A write's references, as its checks found them.
pub(crate) struct Referenced {
    /// Every reference the object makes.
    pub(crate) all: Vec<Reference>,
    /// The objects whose content the checks read, with the revision read (`None`: absent).
    pub(crate) read: Vec<(ObjectKey, Option<Revision>)>,
}

impl Referenced {
    /// `txn` requiring, besides what it already checks, every target to exist and those the
    /// checks read to be as read.
    pub(crate) fn required(&self, mut txn: Txn) -> Txn {
        for (key, revision) in &self.read {
            if !txn.checks.iter().any(|(k, _)| k == key) {
                let precondition = revision.map_or(Precondition::Absent, Precondition::AtRevision);
                txn = txn.check(key.clone(), precondition);
            }
        }
        for target in self.all.iter().map(|r| &r.target) {
            if !txn.checks.iter().any(|(k, _)| k == target) {
                txn = txn.check(target.clone(), Precondition::Present);
            }
        }
        txn
    }

    /// Notes more objects the checks read.
    pub(crate) fn note_read(&mut self, read: Vec<(ObjectKey, Option<Revision>)>) {
        self.read.extend(read);
    }
}

impl Resources {
    /// Checks that every reference of `object` resolves and fits (DESIGN §2, creation order),
    /// and that parameters and overrides satisfy the schemas of what they refer to. Returns
    /// the references and what the checks read, so the write can require, when it commits,
    /// that every target still exists and that those read are as they were (another server
    /// may change or delete one meanwhile).
    pub(crate) fn check_references(&self, object: &Object) -> Result<Referenced, Error> {
        let key = object.key();
        let all = references(object);
        let mut read = Vec::new();
        // Most references need only exist; the few whose content is checked are decoded.
        let mut resolved: Vec<(Reference, Arc<Object>)> = Vec::new();
        for reference in all.iter().cloned() {
            let Some(record) = self.store.get(&reference.target)? else {
                return Err(Error::MissingReference {
                    object: key,
                    field: reference.field,
                    target: reference.target.to_string(),
                });
            };
            let content = kinds::needs_content(object.kind(), reference.target.kind);
            if content || reference.target.kind == Kind::Environment {
                read.push((reference.target.clone(), Some(record.mod_revision)));
            }
            // Nothing new may point at an environment on its way out.
            if reference.target.kind == Kind::Environment
                && self.decoded(&record)?.meta().delete_time.is_some()
            {
                return Err(Error::Refused {
                    object: key,
                    message: format!(
                        "{}: {} is being deleted (waiting for its data planes to prune)",
                        reference.field, reference.target
                    ),
                });
            }
            if content {
                let target = self.decoded(&record)?;
                resolved.push((reference, target));
            }
        }
        for (reference, target) in &resolved {
            if let Object::Component(component) = &**target
                && reference.owner
            {
                check_owner_project(&key, object, reference, component)?;
            }
        }
        kinds::check_resolved(object, self, &key, &resolved)?;
        Ok(Referenced { all, read })
    }

    /// Reads one object shared, decoded once per revision (see [`Resources::decoded`]): for
    /// readers of the types and traits every render and release reads.
    pub fn get_shared(&self, key: &ObjectKey) -> Result<Arc<Object>, Error> {
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.clone()))?;
        self.decoded(&record)
    }

    /// The object `record` holds, decoded once per revision: the types, traits and
    /// environments that writes refer to are read far more often than they change, and a
    /// type with its templates takes longer to decode than the rest of a Component's checks.
    fn decoded(&self, record: &Record) -> Result<Arc<Object>, Error> {
        let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(object) = cache.objects.get(&record.key)
            && object.meta().resource_version == record.mod_revision
        {
            return Ok(object.clone());
        }
        let object = Arc::new(decode(record)?);
        if cache.bytes + record.value.len() > DECODED_BYTES {
            *cache = Decoded::default();
        }
        cache.bytes += record.value.len();
        cache.objects.insert(record.key.clone(), object.clone());
        Ok(object)
    }

    /// Validates `value` (with defaults applied) against `schema`, if there is one.
    /// `cache_id` names the schema's version (owner key and revision) when known, which
    /// spares converting the schema to find it in the cache.
    pub(super) fn check_values(
        &self,
        key: &ObjectKey,
        field: &str,
        cache_id: Option<String>,
        schema: Option<&pbjson_types::Struct>,
        value: Option<&pbjson_types::Struct>,
    ) -> Result<(), Error> {
        let Some(schema) = schema else {
            return Ok(());
        };
        let compiled = match cache_id {
            Some(id) => self.schemas.get_or_compile(&id, || to_json(schema)),
            None => self.schemas.get(&to_json(schema)),
        };
        let schema = compiled
            .map_err(|v| Error::invalid(key, field, format!("the schema does not compile: {v}")))?;
        let value = value.map(to_json);
        schema
            .apply(value.as_ref())
            .map(|_| ())
            .map_err(|violations| Error::invalid(key, field, describe(&violations)))
    }
}

/// An owned object names its project twice (its own `spec.owner.projectName` and its
/// component's); the two must agree.
fn check_owner_project(
    key: &ObjectKey,
    object: &Object,
    reference: &Reference,
    component: &pb::Component,
) -> Result<(), Error> {
    let project = component
        .spec
        .as_ref()
        .and_then(|s| s.owner.as_ref())
        .map_or("", |o| o.project_name.as_str());
    let claimed = kinds::owner(object).map_or("", |o| o.project_name.as_str());
    if claimed == project {
        return Ok(());
    }
    Err(Error::BadReference {
        object: key.clone(),
        field: "spec.owner.projectName".into(),
        message: format!(
            "{} belongs to project {project:?}, not {claimed:?}",
            reference.target
        ),
    })
}

/// What a write that lost a race with another writer is: the object changed since the
/// version the writer named (`Stale`), or something it refers to was deleted
/// (`MissingReference`); otherwise (the object or a target read changed meanwhile) the
/// store's conflict, which the write retries ([`Error::raced`]).
pub(super) fn lost_race(
    error: StoreError,
    key: &ObjectKey,
    named_version: bool,
    referenced: &Referenced,
) -> Error {
    let StoreError::Conflict {
        key: at,
        expected,
        found,
    } = &error
    else {
        return error.into();
    };
    if at == key {
        if !named_version {
            return error.into();
        }
        return Error::Stale {
            key: key.clone(),
            expected: match expected {
                Precondition::AtRevision(revision) => *revision,
                _ => 0,
            },
            found: found.map_or("no object".into(), |r| r.to_string()),
        };
    }
    if found.is_some() {
        return error.into();
    }
    match referenced.all.iter().find(|r| r.target == *at) {
        Some(reference) => Error::MissingReference {
            object: key.clone(),
            field: reference.field.clone(),
            target: reference.target.to_string(),
        },
        None => error.into(),
    }
}
