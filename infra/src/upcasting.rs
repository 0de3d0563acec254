//! Old event versions stay readable: the registry of upcasters, by aggregate type.
//!
//! History is never rewritten. When an event's payload changes shape, its `event_version` is
//! bumped and an upcaster is added here that turns the old stored shape into the new one on
//! load. Every `PgEventStore` (the command buses') and `LoggedEvent::decode` (the
//! projections') takes its upcasters from this one place, so writers and readers always agree.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// The upcasters for `aggregate_type`'s events, oldest change first.
pub fn for_aggregate(aggregate_type: &str) -> Vec<Box<dyn EventUpcaster>> {
    // No event has changed shape yet: every stored event is version "1". When one does, add
    // e.g. `"lot" => vec![Box::new(FieldsUpcaster { event_type: "LotRegistered", .. })]`.
    let _ = aggregate_type;
    Vec::new()
}

/// Upcasts one event type from one version to the next with a payload transformation.
/// Payloads are externally tagged (`{"EventName": {...fields}}`); `transform` gets the fields.
pub struct FieldsUpcaster {
    pub event_type: &'static str,
    pub from_version: &'static str,
    pub to_version: &'static str,
    pub transform: fn(&mut serde_json::Map<String, Value>),
}

impl EventUpcaster for FieldsUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == self.from_version
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(fields)) = event.payload.get_mut(self.event_type) {
            (self.transform)(fields);
        }
        event.event_version = self.to_version.to_owned();
        event
    }
}
