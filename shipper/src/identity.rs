//! Who the shipper is (the `agent.*` fields on every record) and whom it
//! speaks for: one service. A line claiming another `service.name` is shipped
//! tagged [`TAG_FOREIGN_SERVICE`]; a heartbeat the shipper cannot vouch for
//! (another service's, one naming a `heartbeat.target_service` as only
//! shippers do, or in wrap mode another instance than the child's) is tagged
//! [`TAG_FOREIGN_HEARTBEAT`] and goes to the logs topic, never the heartbeats
//! topic. So a wrapped program cannot mark another service SERVING or keep it
//! alive.

use std::sync::{Arc, OnceLock};

use crate::datadir::AgentId;

/// Tag on a line whose `service.name` is not the service this shipper runs for.
pub const TAG_FOREIGN_SERVICE: &str = "meshwatch_shipper_foreign_service";
/// Tag on a heartbeat line the shipper does not route as a heartbeat.
pub const TAG_FOREIGN_HEARTBEAT: &str = "meshwatch_shipper_foreign_heartbeat";
/// `agent.type` of every record.
pub const AGENT_TYPE: &str = "meshwatch-shipper";

/// The shipper carrying the records.
#[derive(Clone, Debug)]
pub struct Agent {
    /// The data directory's persistent id.
    pub id: AgentId,
    /// This process's id: the `service.instance.id` of the shipper's own heartbeats.
    pub ephemeral_id: String,
    /// The service it ships for (`agent.name`).
    pub name: String,
    pub version: String,
}

impl Agent {
    /// `"agent.type":…,"agent.version":…,"agent.id":…,"agent.ephemeral_id":…,"agent.name":…`
    pub fn encoded_fields(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        for (i, (name, value)) in self.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&crate::event::encode_field(name, value));
        }
        out
    }

    /// The fields as name/value pairs.
    pub fn fields(&self) -> [(&'static str, String); 5] {
        [
            ("agent.type", AGENT_TYPE.to_owned()),
            ("agent.version", self.version.clone()),
            ("agent.id", self.id.to_string()),
            ("agent.ephemeral_id", self.ephemeral_id.clone()),
            ("agent.name", self.name.clone()),
        ]
    }
}

/// The service a shipper speaks for, and (in wrap mode) the one instance of
/// it whose heartbeats it routes: the first its child announces.
#[derive(Clone, Debug)]
pub struct Speaker {
    service: String,
    /// Wrap mode: shared by the stdout and stderr readers.
    pin: Option<Arc<OnceLock<Box<str>>>>,
    /// The shipper's own records (its heartbeats, reports): nothing to judge.
    trusted: bool,
}

/// What a line claims, as far as identity goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Claim<'a> {
    /// `Some(None)`: a `service.name` that is not a plain string.
    pub service: Option<Option<&'a str>>,
    pub heartbeat: bool,
    pub instance_id: Option<&'a str>,
    pub target_service: bool,
}

/// The shipper's judgement of a line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub foreign_service: bool,
    /// A heartbeat not routed as one.
    pub foreign_heartbeat: bool,
}

impl Verdict {
    pub fn tags(self) -> impl Iterator<Item = &'static str> {
        [
            (self.foreign_service, TAG_FOREIGN_SERVICE),
            (self.foreign_heartbeat, TAG_FOREIGN_HEARTBEAT),
        ]
        .into_iter()
        .filter_map(|(on, tag)| on.then_some(tag))
    }

    pub fn any(self) -> bool {
        self.foreign_service || self.foreign_heartbeat
    }
}

impl Speaker {
    /// `wrap`: the lines come from one child process, whose instance is pinned.
    pub fn new(service: &str, wrap: bool) -> Self {
        Self {
            service: service.to_owned(),
            pin: wrap.then(|| Arc::new(OnceLock::new())),
            trusted: false,
        }
    }

    /// For records the shipper writes itself.
    pub fn trusted(service: &str) -> Self {
        Self {
            trusted: true,
            ..Self::new(service, false)
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn judge(&self, claim: &Claim<'_>) -> Verdict {
        if self.trusted {
            return Verdict::default();
        }
        let foreign_service = match claim.service {
            None => false,
            Some(Some(name)) => name != self.service,
            Some(None) => true,
        };
        let other_instance = match (&self.pin, claim.instance_id) {
            (Some(pin), Some(id))
                if claim.heartbeat && !foreign_service && !claim.target_service =>
            {
                &**pin.get_or_init(|| id.into()) != id
            }
            _ => false,
        };
        Verdict {
            foreign_service,
            foreign_heartbeat: claim.heartbeat
                && (foreign_service || claim.target_service || other_instance),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb<'a>(service: Option<&'a str>, instance: &'a str) -> Claim<'a> {
        Claim {
            service: service.map(Some),
            heartbeat: true,
            instance_id: Some(instance),
            target_service: false,
        }
    }

    #[test]
    fn only_the_own_service_and_the_childs_instance_are_vouched_for() {
        let s = Speaker::new("order", true);
        assert_eq!(s.judge(&hb(Some("order"), "order-1")), Verdict::default());
        let other = s.judge(&hb(Some("payment"), "payment-1"));
        assert!(other.foreign_service && other.foreign_heartbeat);
        // The child's instance is pinned by its first heartbeat.
        let second = s.judge(&hb(Some("order"), "order-2"));
        assert!(!second.foreign_service && second.foreign_heartbeat);
        assert_eq!(s.judge(&hb(Some("order"), "order-1")), Verdict::default());
        // A heartbeat naming a target is a shipper's: never the child's.
        let shipper = s.judge(&Claim {
            target_service: true,
            ..hb(Some("order"), "order-1")
        });
        assert!(shipper.foreign_heartbeat);
        // No claim: the line is the service's own (service.name gets added).
        assert_eq!(s.judge(&Claim::default()), Verdict::default());
        // A log line of another service is tagged but stays a log line.
        let log = s.judge(&Claim {
            service: Some(Some("payment")),
            ..Claim::default()
        });
        assert!(log.foreign_service && !log.foreign_heartbeat);
        assert_eq!(log.tags().collect::<Vec<_>>(), vec![TAG_FOREIGN_SERVICE]);
        // A non-string service.name is no claim to be this service.
        assert!(
            s.judge(&Claim {
                service: Some(None),
                ..Claim::default()
            })
            .foreign_service
        );
    }

    #[test]
    fn outside_wrap_mode_instances_are_not_pinned() {
        let s = Speaker::new("order", false);
        assert_eq!(s.judge(&hb(Some("order"), "order-1")), Verdict::default());
        assert_eq!(s.judge(&hb(Some("order"), "order-2")), Verdict::default());
    }

    #[test]
    fn agent_fields_are_valid_json() {
        let a = Agent {
            id: AgentId(7),
            ephemeral_id: "shipper-1".into(),
            name: "or\"der".into(),
            version: "0.1.0".into(),
        };
        let mut obj = b"{".to_vec();
        obj.extend(a.encoded_fields());
        obj.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&obj).unwrap();
        assert_eq!(v["agent.name"], "or\"der");
        assert_eq!(v["agent.id"], "00000000000000000000000000000007");
        assert_eq!(v["agent.type"], AGENT_TYPE);
    }
}
