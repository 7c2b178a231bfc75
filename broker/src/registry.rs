//! The registry: entities, services and their actions, access rights and topic subscriptions, built from the configuration.
//!
//! A [`Registry`] is immutable: it is built once from a checked [`Config`] with every pattern
//! (`comune:*`, `*`) resolved against the configured entities, and the hub swaps in a new
//! `Arc<Registry>` when the configuration is reloaded. [`Registry::authorize`] is step 4 of
//! accepting an envelope: may this sender send this action of this service to this recipient?

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use reqwest::Url;
use snodo_envelopes::{EntityId, Profile, Recipient};

use crate::config::{Config, Pattern};
use crate::validate::SchemaSetting;

/// A member of the federation as the hub knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// The entity, `class:code`.
    pub id: EntityId,
    /// A human name for logs and listings.
    pub name: Option<String>,
    /// Where its messages are pushed; `None` when it pulls from its inbox.
    pub endpoint: Option<Url>,
}

/// A service and its actions.
#[derive(Clone, Debug)]
pub struct Service {
    /// The service's name (`residenza.cambio`).
    pub name: String,
    /// The version of its message contract (`v1`).
    pub version: String,
    /// How long delivery of its messages is tried before they are dead-lettered.
    pub deadline: Duration,
    /// Its actions by name.
    actions: HashMap<String, Action>,
}

impl Service {
    /// The action called `name`.
    #[must_use]
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.get(name)
    }

    /// Every action of the service, in no particular order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.actions.values()
    }
}

/// One action of a service with its access rights, resolved to entities.
#[derive(Clone, Debug)]
pub struct Action {
    /// The service it belongs to.
    pub service: String,
    /// The action's name (`richiesta`).
    pub name: String,
    /// The one profile it is sent with, or `None` for any.
    pub profile: Option<Profile>,
    /// Who may send it.
    senders: Allowed,
    /// To whom it may be addressed (events go to `subscribers` instead).
    recipients: Allowed,
    /// Who receives its events, sorted, without duplicates.
    subscribers: Vec<EntityId>,
    /// The catalog message its bodies must be (acceptance step 5); `None` checks nothing.
    pub schema: Option<&'static snodo_schemas::MessageSchema>,
}

impl Action {
    /// True when `entity` may send this action.
    #[must_use]
    pub fn allows_sender(&self, entity: &EntityId) -> bool {
        self.senders.contains(entity)
    }

    /// True when this action may be addressed to `entity`.
    #[must_use]
    pub fn allows_recipient(&self, entity: &EntityId) -> bool {
        self.recipients.contains(entity)
    }

    /// Who receives an event of this action, sorted.
    #[must_use]
    pub fn subscribers(&self) -> &[EntityId] {
        &self.subscribers
    }
}

/// A set of entities a list of patterns names: all of them, or an explicit set.
///
/// Patterns are resolved once, when the registry is built; `*` stays a flag so that a rule open
/// to a federation of a thousand comuni costs no set of a thousand ids.
#[derive(Clone, Debug, Default)]
struct Allowed {
    /// `*` was among the patterns.
    all: bool,
    /// The configured entities the other patterns name.
    ids: HashSet<EntityId>,
}

impl Allowed {
    fn resolve<'a>(patterns: &[Pattern], entities: impl Iterator<Item = &'a EntityId>) -> Self {
        if patterns.contains(&Pattern::Any) {
            return Allowed {
                all: true,
                ids: HashSet::new(),
            };
        }
        let ids = entities
            .filter(|e| patterns.iter().any(|p| p.matches(e)))
            .cloned()
            .collect();
        Allowed { all: false, ids }
    }

    /// Only called for registered entities, so `all` needs no check of its own.
    fn contains(&self, entity: &EntityId) -> bool {
        self.all || self.ids.contains(entity)
    }
}

/// Why the registry refuses an envelope. Each variant has a stable [`Refusal::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The sender is not a member of the federation.
    #[error("sender `{sender}` is not a registered entity")]
    UnknownSender {
        /// The sender.
        sender: EntityId,
    },
    /// The recipient is not a member of the federation.
    #[error("recipient `{recipient}` is not a registered entity")]
    UnknownRecipient {
        /// The recipient.
        recipient: EntityId,
    },
    /// No such service.
    #[error("service `{service}` is not defined")]
    UnknownService {
        /// The service named.
        service: String,
    },
    /// The service has no such action.
    #[error("service `{service}` has no action `{action}`")]
    UnknownAction {
        /// The service.
        service: String,
        /// The action named.
        action: String,
    },
    /// The sender may not send this action.
    #[error("`{sender}` may not send `{service}` / `{action}`")]
    SenderNotAllowed {
        /// The sender.
        sender: EntityId,
        /// The service.
        service: String,
        /// The action.
        action: String,
    },
    /// This action may not be addressed to the recipient.
    #[error("`{service}` / `{action}` may not be sent to `{recipient}`{}", reason.map(|r| format!(": {r}")).unwrap_or_default())]
    RecipientNotAllowed {
        /// The recipient, or `*`.
        recipient: Recipient,
        /// The service.
        service: String,
        /// The action.
        action: String,
        /// Why, when it is more than the access rule.
        reason: Option<&'static str>,
    },
    /// The action is not sent with this profile.
    #[error("`{service}` / `{action}` is sent as {allowed}, not {profile}")]
    ProfileNotAllowed {
        /// The service.
        service: String,
        /// The action.
        action: String,
        /// The profile of the envelope.
        profile: Profile,
        /// The profile the action is sent with.
        allowed: Profile,
    },
}

impl Refusal {
    /// A stable, machine-readable code (kebab-case) for problem+json refusals.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownSender { .. } => "unknown-sender",
            Refusal::UnknownRecipient { .. } => "unknown-recipient",
            Refusal::UnknownService { .. } => "unknown-service",
            Refusal::UnknownAction { .. } => "unknown-action",
            Refusal::SenderNotAllowed { .. } => "sender-not-allowed",
            Refusal::RecipientNotAllowed { .. } => "recipient-not-allowed",
            Refusal::ProfileNotAllowed { .. } => "profile-not-allowed",
        }
    }
}

/// Entities, services and access rights, resolved from a [`Config`] and never changed.
#[derive(Debug)]
pub struct Registry {
    /// Entities by id, in id order.
    entities: BTreeMap<EntityId, Entity>,
    /// Services by name.
    services: HashMap<String, Service>,
    /// Auditor names.
    auditors: HashSet<String>,
    /// The deadline of services that set none, and of unknown ones.
    default_deadline: Duration,
}

impl Registry {
    /// Builds the registry from a configuration that [`Config::load`] (or
    /// [`Config::problems`]) has checked. On an unchecked one it does not fail: patterns that
    /// name no entity grant nothing, the first of duplicate definitions wins, and subscriptions
    /// to unknown actions are dropped.
    #[must_use]
    pub fn from_config(config: &Config) -> Registry {
        let mut entities = BTreeMap::new();
        for e in &config.entities {
            entities.entry(e.id.clone()).or_insert_with(|| Entity {
                id: e.id.clone(),
                name: e.name.clone(),
                // Checked to be an https URL by the configuration.
                endpoint: e.endpoint.as_deref().and_then(|u| Url::parse(u).ok()),
            });
        }
        let default_deadline = config.delivery.default_deadline;
        let mut services: HashMap<String, Service> = HashMap::new();
        for s in &config.services {
            if services.contains_key(&s.name) {
                continue;
            }
            let mut actions = HashMap::new();
            for a in &s.actions {
                actions.entry(a.name.clone()).or_insert_with(|| Action {
                    service: s.name.clone(),
                    name: a.name.clone(),
                    profile: a.profile,
                    senders: Allowed::resolve(&a.senders, entities.keys()),
                    recipients: Allowed::resolve(&a.recipients, entities.keys()),
                    subscribers: Vec::new(),
                    // Checked by the configuration; an unchecked bad name checks nothing.
                    schema: SchemaSetting::resolve(a.schema.as_ref(), &s.name, &a.name)
                        .ok()
                        .flatten(),
                });
            }
            services.insert(
                s.name.clone(),
                Service {
                    name: s.name.clone(),
                    version: s.version.clone(),
                    deadline: s.deadline.unwrap_or(default_deadline),
                    actions,
                },
            );
        }
        for sub in &config.subscriptions {
            let Some(action) = services
                .get_mut(&sub.service)
                .and_then(|s| s.actions.get_mut(&sub.action))
            else {
                continue;
            };
            action.subscribers.extend(
                entities
                    .keys()
                    .filter(|e| sub.subscribers.iter().any(|p| p.matches(e)))
                    .cloned(),
            );
        }
        for action in services.values_mut().flat_map(|s| s.actions.values_mut()) {
            action.subscribers.sort();
            action.subscribers.dedup();
        }
        Registry {
            entities,
            services,
            auditors: config.auditors.iter().map(|a| a.name.clone()).collect(),
            default_deadline,
        }
    }

    /// The entity `id`, if registered.
    #[must_use]
    pub fn entity(&self, id: &EntityId) -> Option<&Entity> {
        self.entities.get(id)
    }

    /// Every registered entity, in id order.
    pub fn entities(&self) -> impl Iterator<Item = &Entity> {
        self.entities.values()
    }

    /// The service `name`, if defined.
    #[must_use]
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    /// True when `name` is a configured auditor (certificate SAN `urn:snodo:auditor:<name>`).
    #[must_use]
    pub fn is_auditor(&self, name: &str) -> bool {
        self.auditors.contains(name)
    }

    /// Decides whether `sender` may send `service`/`action` with `profile` to `recipient`.
    ///
    /// Checks, in order: the sender is registered; an entity recipient is registered; the
    /// service and action exist; the action is sent with this profile; the sender may send it;
    /// the recipient may receive it — an event goes to `*` (its subscribers), anything else to
    /// one entity the action allows.
    ///
    /// # Errors
    /// The first [`Refusal`] that applies.
    pub fn authorize(
        &self,
        sender: &EntityId,
        recipient: &Recipient,
        service: &str,
        action: &str,
        profile: Profile,
    ) -> Result<&Action, Refusal> {
        if !self.entities.contains_key(sender) {
            return Err(Refusal::UnknownSender {
                sender: sender.clone(),
            });
        }
        if let Recipient::Entity(r) = recipient
            && !self.entities.contains_key(r)
        {
            return Err(Refusal::UnknownRecipient {
                recipient: r.clone(),
            });
        }
        let s = self
            .services
            .get(service)
            .ok_or_else(|| Refusal::UnknownService {
                service: service.to_owned(),
            })?;
        let a = s
            .actions
            .get(action)
            .ok_or_else(|| Refusal::UnknownAction {
                service: service.to_owned(),
                action: action.to_owned(),
            })?;
        if let Some(allowed) = a.profile
            && allowed != profile
        {
            return Err(Refusal::ProfileNotAllowed {
                service: service.to_owned(),
                action: action.to_owned(),
                profile,
                allowed,
            });
        }
        if !a.allows_sender(sender) {
            return Err(Refusal::SenderNotAllowed {
                sender: sender.clone(),
                service: service.to_owned(),
                action: action.to_owned(),
            });
        }
        let refuse = |reason| Refusal::RecipientNotAllowed {
            recipient: recipient.clone(),
            service: service.to_owned(),
            action: action.to_owned(),
            reason,
        };
        match (recipient, profile) {
            (Recipient::Broadcast, Profile::Event) => Ok(a),
            (Recipient::Broadcast, _) => Err(refuse(Some("`*` is only for events"))),
            (Recipient::Entity(_), Profile::Event) => Err(refuse(Some(
                "an event goes to `*`, the subscribers of its topic",
            ))),
            (Recipient::Entity(r), _) if a.allows_recipient(r) => Ok(a),
            (Recipient::Entity(_), _) => Err(refuse(None)),
        }
    }

    /// Every topic with subscribers: (service, action, subscribers).
    pub fn topics(&self) -> impl Iterator<Item = (&str, &str, &[EntityId])> {
        self.services.values().flat_map(|s| {
            s.actions
                .values()
                .filter(|a| !a.subscribers.is_empty())
                .map(|a| (a.service.as_str(), a.name.as_str(), a.subscribers()))
        })
    }

    /// Who receives an event of `service`/`action`, sorted; empty for an unknown topic.
    #[must_use]
    pub fn subscribers(&self, service: &str, action: &str) -> &[EntityId] {
        self.services
            .get(service)
            .and_then(|s| s.actions.get(action))
            .map_or(&[], |a| a.subscribers())
    }

    /// How long delivery of `service`'s messages is tried before they are dead-lettered: its
    /// own `deadline`, else `delivery.default_deadline`.
    #[must_use]
    pub fn deadline(&self, service: &str) -> Duration {
        self.services
            .get(service)
            .map_or(self.default_deadline, |s| s.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ActionConfig, AuditorConfig, DeliveryConfig, EntityConfig, HubConfig, JournalConfig,
        LimitsConfig, ServiceConfig, SubscriptionConfig, TlsConfig,
    };

    fn id(s: &str) -> EntityId {
        s.parse().unwrap()
    }

    fn patterns(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn action(
        name: &str,
        profile: Option<Profile>,
        senders: &[&str],
        recipients: &[&str],
    ) -> ActionConfig {
        ActionConfig {
            name: name.into(),
            profile,
            senders: patterns(senders),
            recipients: patterns(recipients),
            schema: None,
        }
    }

    fn config() -> Config {
        let entities = [
            "comune:001272",
            "comune:004078",
            "anpr:ministero",
            "portale:comunefacile",
            "prefettura:TO",
        ];
        Config {
            hub: HubConfig::default(),
            tls: TlsConfig {
                ca: "ca.crt".into(),
                crl: None,
                cert: "hub.crt".into(),
                key: "hub.key".into(),
            },
            limits: LimitsConfig::default(),
            journal: JournalConfig::default(),
            delivery: DeliveryConfig::default(),
            transport: crate::config::TransportConfig::default(),
            peers: Vec::new(),
            entities: entities
                .iter()
                .map(|e| EntityConfig {
                    id: id(e),
                    name: None,
                    endpoint: (*e == "anpr:ministero").then(|| "https://anpr.example.it/in".into()),
                })
                .collect(),
            services: vec![
                ServiceConfig {
                    name: "residenza.cambio".into(),
                    version: "v1".into(),
                    deadline: Some(Duration::from_secs(7200)),
                    actions: vec![
                        action(
                            "richiesta",
                            Some(Profile::Request),
                            &["comune:*", "portale:comunefacile"],
                            &["anpr:ministero"],
                        ),
                        action(
                            "esito",
                            Some(Profile::Response),
                            &["anpr:ministero"],
                            &["comune:*", "portale:comunefacile"],
                        ),
                        action("nota", None, &["*"], &["*"]),
                    ],
                },
                ServiceConfig {
                    name: "mobilita.viabilita".into(),
                    version: "v1".into(),
                    deadline: None,
                    actions: vec![action("evento", Some(Profile::Event), &["comune:*"], &[])],
                },
            ],
            subscriptions: vec![
                SubscriptionConfig {
                    service: "mobilita.viabilita".into(),
                    action: "evento".into(),
                    subscribers: patterns(&["portale:comunefacile", "prefettura:TO"]),
                },
                SubscriptionConfig {
                    service: "mobilita.viabilita".into(),
                    action: "evento".into(),
                    subscribers: patterns(&["comune:*", "prefettura:TO"]),
                },
            ],
            auditors: vec![AuditorConfig {
                name: "revisore".into(),
            }],
        }
    }

    fn registry() -> Registry {
        Registry::from_config(&config())
    }

    fn to(s: &str) -> Recipient {
        Recipient::parse(s).unwrap()
    }

    fn refusal(
        sender: &str,
        recipient: &str,
        service: &str,
        action: &str,
        profile: Profile,
    ) -> Refusal {
        registry()
            .authorize(&id(sender), &to(recipient), service, action, profile)
            .unwrap_err()
    }

    #[test]
    fn allowed_exchanges_return_their_action() {
        let r = registry();
        let a = r
            .authorize(
                &id("comune:004078"),
                &to("anpr:ministero"),
                "residenza.cambio",
                "richiesta",
                Profile::Request,
            )
            .unwrap();
        assert_eq!(
            (a.service.as_str(), a.name.as_str()),
            ("residenza.cambio", "richiesta")
        );
        r.authorize(
            &id("portale:comunefacile"),
            &to("anpr:ministero"),
            "residenza.cambio",
            "richiesta",
            Profile::Request,
        )
        .unwrap();
        r.authorize(
            &id("anpr:ministero"),
            &to("comune:001272"),
            "residenza.cambio",
            "esito",
            Profile::Response,
        )
        .unwrap();
        r.authorize(
            &id("comune:001272"),
            &to("*"),
            "mobilita.viabilita",
            "evento",
            Profile::Event,
        )
        .unwrap();
        // An action without a profile takes any, and `*` lets anyone send to anyone.
        for p in [Profile::Oneway, Profile::Request, Profile::Response] {
            r.authorize(
                &id("prefettura:TO"),
                &to("portale:comunefacile"),
                "residenza.cambio",
                "nota",
                p,
            )
            .unwrap();
        }
    }

    #[test]
    fn unknown_parties_and_names() {
        let cases = [
            (
                refusal(
                    "comune:999999",
                    "anpr:ministero",
                    "residenza.cambio",
                    "richiesta",
                    Profile::Request,
                ),
                "unknown-sender",
                "comune:999999",
            ),
            (
                refusal(
                    "comune:001272",
                    "anpr:altro",
                    "residenza.cambio",
                    "richiesta",
                    Profile::Request,
                ),
                "unknown-recipient",
                "anpr:altro",
            ),
            (
                refusal(
                    "comune:001272",
                    "anpr:ministero",
                    "residenza.trasloco",
                    "richiesta",
                    Profile::Request,
                ),
                "unknown-service",
                "residenza.trasloco",
            ),
            (
                refusal(
                    "comune:001272",
                    "anpr:ministero",
                    "residenza.cambio",
                    "domanda",
                    Profile::Request,
                ),
                "unknown-action",
                "domanda",
            ),
        ];
        for (refusal, code, named) in cases {
            assert_eq!(refusal.code(), code);
            assert!(refusal.to_string().contains(named), "{refusal}");
        }
    }

    #[test]
    fn sender_not_allowed() {
        let r = refusal(
            "prefettura:TO",
            "anpr:ministero",
            "residenza.cambio",
            "richiesta",
            Profile::Request,
        );
        assert_eq!(r.code(), "sender-not-allowed");
        assert_eq!(
            r.to_string(),
            "`prefettura:TO` may not send `residenza.cambio` / `richiesta`"
        );
        // A class pattern covers the class only.
        let r = refusal(
            "anpr:ministero",
            "*",
            "mobilita.viabilita",
            "evento",
            Profile::Event,
        );
        assert_eq!(r.code(), "sender-not-allowed");
    }

    #[test]
    fn recipient_not_allowed() {
        let r = refusal(
            "comune:001272",
            "prefettura:TO",
            "residenza.cambio",
            "richiesta",
            Profile::Request,
        );
        assert_eq!(r.code(), "recipient-not-allowed");
        assert_eq!(
            r.to_string(),
            "`residenza.cambio` / `richiesta` may not be sent to `prefettura:TO`"
        );
        let r = refusal(
            "comune:001272",
            "*",
            "residenza.cambio",
            "nota",
            Profile::Oneway,
        );
        assert_eq!(r.code(), "recipient-not-allowed");
        assert!(r.to_string().contains("only for events"), "{r}");
        let r = refusal(
            "comune:001272",
            "prefettura:TO",
            "residenza.cambio",
            "nota",
            Profile::Event,
        );
        assert_eq!(r.code(), "recipient-not-allowed");
        assert!(r.to_string().contains("goes to `*`"), "{r}");
    }

    #[test]
    fn profile_not_allowed() {
        let r = refusal(
            "comune:001272",
            "anpr:ministero",
            "residenza.cambio",
            "richiesta",
            Profile::Oneway,
        );
        assert_eq!(r.code(), "profile-not-allowed");
        assert_eq!(
            r.to_string(),
            "`residenza.cambio` / `richiesta` is sent as request, not oneway"
        );
        let r = refusal(
            "comune:001272",
            "anpr:ministero",
            "mobilita.viabilita",
            "evento",
            Profile::Oneway,
        );
        assert_eq!(r.code(), "profile-not-allowed");
    }

    #[test]
    fn subscribers_merge_resolve_and_sort() {
        let r = registry();
        let subs: Vec<&str> = r
            .subscribers("mobilita.viabilita", "evento")
            .iter()
            .map(EntityId::as_str)
            .collect();
        assert_eq!(
            subs,
            [
                "comune:001272",
                "comune:004078",
                "portale:comunefacile",
                "prefettura:TO"
            ]
        );
        assert!(r.subscribers("mobilita.viabilita", "altro").is_empty());
        assert!(r.subscribers("residenza.cambio", "richiesta").is_empty());
    }

    #[test]
    fn patterns_resolve_against_configured_entities() {
        let mut c = config();
        c.services[0].actions[0].senders = patterns(&["comune:*", "comune:999999", "provincia:*"]);
        let r = Registry::from_config(&c);
        let a = r
            .service("residenza.cambio")
            .unwrap()
            .action("richiesta")
            .unwrap();
        assert!(a.allows_sender(&id("comune:001272")));
        assert!(a.allows_sender(&id("comune:004078")));
        assert!(!a.allows_sender(&id("comune:999999")));
        assert!(!a.allows_sender(&id("portale:comunefacile")));
        let nota = r
            .service("residenza.cambio")
            .unwrap()
            .action("nota")
            .unwrap();
        assert!(
            nota.allows_sender(&id("anpr:ministero"))
                && nota.allows_recipient(&id("prefettura:TO"))
        );
    }

    #[test]
    fn entities_deadlines_and_auditors() {
        let r = registry();
        let ids: Vec<&str> = r.entities().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "anpr:ministero",
                "comune:001272",
                "comune:004078",
                "portale:comunefacile",
                "prefettura:TO"
            ]
        );
        let anpr = r.entity(&id("anpr:ministero")).unwrap();
        assert_eq!(
            anpr.endpoint.as_ref().map(Url::as_str),
            Some("https://anpr.example.it/in")
        );
        assert_eq!(r.entity(&id("comune:001272")).unwrap().endpoint, None);
        assert!(r.entity(&id("comune:999999")).is_none());
        assert_eq!(r.deadline("residenza.cambio"), Duration::from_secs(7200));
        assert_eq!(r.deadline("mobilita.viabilita"), Duration::from_secs(3600));
        assert_eq!(r.deadline("nessuno"), Duration::from_secs(3600));
        assert!(r.is_auditor("revisore"));
        assert!(!r.is_auditor("comune:001272"));
    }
}
