//! The Cedar entity set of a call: its agent and its tool action, in one `Entities`.
//!
//! Cedar takes a call's entities as a set it builds itself: it copies each entity in, hashes
//! it and closes its ancestry. That cost more per authorize than evaluating the default pack
//! (docs/performance.md, *Where an allow's CPU goes*), for a set that depends on nothing but
//! the five values its two entities are built from: the agent's id, risk tier and status, and
//! the tool and action called. So the set of a call of a registered action is built once and
//! kept, keyed by exactly those values. An agent whose tier or status changed, or a catalog
//! that was reloaded, looks up another key; no entry can answer for entities other than the
//! ones it was built from, so nothing needs invalidating. A call of an action the tenant did
//! not register builds its set for itself: what a client names must never grow a cache.

use super::{PolicyPrincipal, PolicyResource};
use crate::model::{AgentStatus, RiskTier};
use cedar_policy::Entities;
use quick_cache::Equivalent;
use quick_cache::sync::Cache;
use std::sync::{Arc, LazyLock};

/// Sets kept at once, over every tenant. One takes about 5.2 KB of heap with its key
/// (measured: 1,000 agents on one action), so the cache holds at most about 11 MB. Past
/// this, the least used are dropped and built again when called again.
const CAPACITY: usize = 2048;

static SETS: LazyLock<Cache<Key, Arc<Entities>>> = LazyLock::new(|| Cache::new(CAPACITY));

/// Everything an entity set is built from. `KeyRef` hashes alike, field for field.
#[derive(Debug, Hash, PartialEq, Eq)]
struct Key {
    agent: String,
    risk_tier: RiskTier,
    status: AgentStatus,
    tool: String,
    action: String,
}

/// A [`Key`] borrowed from the call, so a lookup allocates nothing.
#[derive(Hash)]
struct KeyRef<'a> {
    agent: &'a str,
    risk_tier: RiskTier,
    status: AgentStatus,
    tool: &'a str,
    action: &'a str,
}

impl<'a> KeyRef<'a> {
    fn of(principal: &'a PolicyPrincipal, resource: &'a PolicyResource) -> Self {
        KeyRef {
            agent: principal.id(),
            risk_tier: principal.risk_tier(),
            status: principal.status(),
            tool: resource.tool(),
            action: resource.action(),
        }
    }

    fn to_owned(&self) -> Key {
        Key {
            agent: self.agent.to_owned(),
            risk_tier: self.risk_tier,
            status: self.status,
            tool: self.tool.to_owned(),
            action: self.action.to_owned(),
        }
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.agent == key.agent
            && self.risk_tier == key.risk_tier
            && self.status == key.status
            && self.tool == key.tool
            && self.action == key.action
    }
}

/// The entity set of a call by `principal` on `resource`; kept for the next such call when
/// the action is `registered`. An entity that could not be built fails the call (closed).
pub(super) fn entity_set(
    principal: &PolicyPrincipal,
    resource: &PolicyResource,
    registered: bool,
) -> Result<Arc<Entities>, String> {
    if !registered {
        return build(principal, resource).map(Arc::new);
    }
    let key = KeyRef::of(principal, resource);
    if let Some(set) = SETS.get(&key) {
        return Ok(set);
    }
    let set = Arc::new(build(principal, resource)?);
    SETS.insert(key.to_owned(), Arc::clone(&set));
    Ok(set)
}

fn build(principal: &PolicyPrincipal, resource: &PolicyResource) -> Result<Entities, String> {
    let entities = [principal.entity.clone()?, resource.entity.clone()?];
    Entities::from_entities(entities, None).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::EvalResult;

    fn kept(principal: &PolicyPrincipal, resource: &PolicyResource) -> Option<Arc<Entities>> {
        SETS.get(&KeyRef::of(principal, resource))
    }

    #[test]
    fn a_registered_call_reuses_its_set_and_an_unregistered_one_keeps_nothing() {
        let agent = PolicyPrincipal::new("agt_sets_1", RiskTier::Low, AgentStatus::Active);
        let registered = PolicyResource::new("sets_tool", "registered_action");
        let first = entity_set(&agent, &registered, true).unwrap();
        let second = entity_set(&agent, &registered, true).unwrap();
        assert!(Arc::ptr_eq(&first, &second));

        let named = PolicyResource::new("sets_tool", "named_by_the_client");
        entity_set(&agent, &named, false).unwrap();
        assert!(kept(&agent, &named).is_none());
    }

    #[test]
    fn each_value_an_entity_is_built_from_is_part_of_the_key() {
        let agent = PolicyPrincipal::new("agt_sets_2", RiskTier::Low, AgentStatus::Active);
        let resource = PolicyResource::new("sets_tool", "action");
        let kept_set = entity_set(&agent, &resource, true).unwrap();
        let others = [
            (
                PolicyPrincipal::new("agt_sets_3", RiskTier::Low, AgentStatus::Active),
                PolicyResource::new("sets_tool", "action"),
            ),
            (
                PolicyPrincipal::new("agt_sets_2", RiskTier::High, AgentStatus::Active),
                PolicyResource::new("sets_tool", "action"),
            ),
            (
                PolicyPrincipal::new("agt_sets_2", RiskTier::Low, AgentStatus::Frozen),
                PolicyResource::new("sets_tool", "action"),
            ),
            (
                PolicyPrincipal::new("agt_sets_2", RiskTier::Low, AgentStatus::Active),
                PolicyResource::new("other_tool", "action"),
            ),
            (
                PolicyPrincipal::new("agt_sets_2", RiskTier::Low, AgentStatus::Active),
                PolicyResource::new("sets_tool", "other_action"),
            ),
        ];
        for (principal, resource) in &others {
            let set = entity_set(principal, resource, true).unwrap();
            assert!(
                !Arc::ptr_eq(&kept_set, &set),
                "{principal:?} on {resource:?}"
            );
            let agent = set.get(&principal.uid).expect("the agent is in its set");
            let text = |value: &str| Some(Ok(EvalResult::String(value.to_owned())));
            assert_eq!(
                agent.attr("risk_tier"),
                text(principal.risk_tier().as_str())
            );
            assert_eq!(agent.attr("status"), text(principal.status().as_str()));
            let action = set.get(&resource.uid).expect("the action is in its set");
            assert_eq!(action.attr("tool"), text(resource.tool()));
            assert_eq!(action.attr("action"), text(resource.action()));
        }
    }
}
