//! The envelope model: a header and a body, with a builder that fills ids, times and defaults.

use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::entity::{EntityId, Recipient};
use crate::error::{Error, Result};
use crate::header::{ContentType, Header, Profile};
use crate::limits::Limits;

/// The payload an envelope carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Any JSON value.
    Json(Value),
    /// An XML fragment: zero or more elements and text, well-formed, without DOCTYPE, comments
    /// or processing instructions. Elements should declare their own namespace: in the XML
    /// encoding an unprefixed element inherits the envelope namespace otherwise.
    Xml(String),
}

impl Body {
    /// The media type that describes this body.
    #[must_use]
    pub fn content_type(&self) -> ContentType {
        match self {
            Body::Json(_) => ContentType::Json,
            Body::Xml(_) => ContentType::Xml,
        }
    }
}

/// A message between two entities of the federation (or from one to a topic).
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Who, to whom, what and when.
    pub header: Header,
    /// The payload.
    pub body: Body,
}

impl Envelope {
    /// Starts an envelope from `sender` to `recipient` for `service`/`action`.
    pub fn builder(
        sender: EntityId,
        recipient: impl Into<Recipient>,
        service: impl Into<String>,
        action: impl Into<String>,
    ) -> EnvelopeBuilder {
        EnvelopeBuilder {
            sender,
            recipient: recipient.into(),
            service: service.into(),
            action: action.into(),
            id: None,
            conversation: None,
            in_reply_to: None,
            profile: None,
            created_at: None,
            expires_at: None,
            sequence: None,
            body: Body::Json(Value::Object(serde_json::Map::new())),
        }
    }

    /// Checks the header rules, that `content_type` matches the body and that an XML body is a
    /// well-formed fragment within `limits`.
    ///
    /// # Errors
    /// The first rule broken, as a precise [`Error`].
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        self.header.validate()?;
        if self.header.content_type != self.body.content_type() {
            return Err(Error::invalid(
                "content_type",
                format!(
                    "announces {} but the body is {}",
                    self.header.content_type.as_str(),
                    self.body.content_type().as_str()
                ),
            ));
        }
        if let Body::Xml(xml) = &self.body {
            crate::xml::check_fragment(xml, limits)?;
        }
        Ok(())
    }
}

/// Builds an [`Envelope`], filling `id` (UUIDv7), `created_at` (now), `conversation` (the id)
/// and `profile` (`event` for `*`, otherwise `oneway`, or `response` when answering).
#[derive(Debug)]
#[must_use]
pub struct EnvelopeBuilder {
    sender: EntityId,
    recipient: Recipient,
    service: String,
    action: String,
    id: Option<Uuid>,
    conversation: Option<String>,
    in_reply_to: Option<Uuid>,
    profile: Option<Profile>,
    created_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
    sequence: Option<u64>,
    body: Body,
}

impl EnvelopeBuilder {
    /// Sets the id instead of a fresh UUIDv7.
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Joins an existing conversation.
    pub fn conversation(mut self, conversation: impl Into<String>) -> Self {
        self.conversation = Some(conversation.into());
        self
    }

    /// Answers the envelope `id`.
    pub fn in_reply_to(mut self, id: Uuid) -> Self {
        self.in_reply_to = Some(id);
        self
    }

    /// Sets the messaging profile.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// Sets the creation time instead of now.
    pub fn created_at(mut self, t: OffsetDateTime) -> Self {
        self.created_at = Some(t);
        self
    }

    /// Sets an absolute expiry.
    pub fn expires_at(mut self, t: OffsetDateTime) -> Self {
        self.expires_at = Some(t);
        self
    }

    /// Expires `d` after creation.
    pub fn expires_in(mut self, d: Duration) -> Self {
        let created = *self.created_at.get_or_insert_with(now);
        self.expires_at = Some(created + d);
        self
    }

    /// Sets the per-conversation sequence number.
    pub fn sequence(mut self, n: u64) -> Self {
        self.sequence = Some(n);
        self
    }

    /// Carries a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }

    /// Carries an XML fragment as the body.
    pub fn xml(mut self, body: impl Into<String>) -> Self {
        self.body = Body::Xml(body.into());
        self
    }

    /// Carries `body`.
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// Fills the defaults and validates the result.
    ///
    /// # Errors
    /// The first header rule broken, or an XML body that is not a well-formed fragment.
    pub fn build(self) -> Result<Envelope> {
        let id = self.id.unwrap_or_else(Uuid::now_v7);
        let profile = self
            .profile
            .unwrap_or(match (&self.recipient, self.in_reply_to) {
                (Recipient::Broadcast, _) => Profile::Event,
                (_, Some(_)) => Profile::Response,
                (_, None) => Profile::Oneway,
            });
        let envelope = Envelope {
            header: Header {
                id,
                sender: self.sender,
                recipient: self.recipient,
                service: self.service,
                action: self.action,
                conversation: self.conversation.unwrap_or_else(|| id.to_string()),
                in_reply_to: self.in_reply_to,
                profile,
                created_at: self.created_at.unwrap_or_else(now),
                expires_at: self.expires_at,
                sequence: self.sequence,
                content_type: self.body.content_type(),
            },
            body: self.body,
        };
        envelope.validate(&Limits::default())?;
        Ok(envelope)
    }
}

/// Now, in UTC, to the millisecond (what headers carry).
#[must_use]
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(s: &str) -> EntityId {
        s.parse().unwrap()
    }

    #[test]
    fn builder_fills_id_time_conversation_and_profile() {
        let env = Envelope::builder(
            e("comune:001272"),
            e("anpr:ministero"),
            "residenza.cambio",
            "richiesta",
        )
        .json(json!({"cf": "RSSMRA80A01L219X"}))
        .build()
        .unwrap();
        let h = &env.header;
        assert_eq!(h.id.get_version_num(), 7);
        assert_eq!(h.conversation, h.id.to_string());
        assert_eq!(h.profile, Profile::Oneway);
        assert_eq!(h.content_type, ContentType::Json);
        assert!((OffsetDateTime::now_utc() - h.created_at).abs() < Duration::seconds(5));
    }

    #[test]
    fn a_response_must_name_its_request() {
        let err = Envelope::builder(
            e("anpr:ministero"),
            e("comune:001272"),
            "residenza.cambio",
            "esito",
        )
        .profile(Profile::Response)
        .build()
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "in_reply_to",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn broadcast_only_for_events() {
        let err = Envelope::builder(
            e("comune:001272"),
            Recipient::Broadcast,
            "mobilita.notizie",
            "evento",
        )
        .profile(Profile::Request)
        .build()
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "recipient",
                    ..
                }
            ),
            "{err}"
        );
        let ok = Envelope::builder(
            e("comune:001272"),
            Recipient::Broadcast,
            "mobilita.notizie",
            "evento",
        )
        .build()
        .unwrap();
        assert_eq!(ok.header.profile, Profile::Event);
    }

    #[test]
    fn names_and_times_are_checked() {
        let b = || {
            Envelope::builder(
                e("comune:001272"),
                e("anpr:ministero"),
                "residenza.cambio",
                "richiesta",
            )
        };
        let err = Envelope::builder(e("comune:001272"), e("anpr:ministero"), "Residenza", "x")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "service",
                    ..
                }
            ),
            "{err}"
        );
        let err = Envelope::builder(e("comune:001272"), e("anpr:ministero"), "a.b", "x.y")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "action",
                    ..
                }
            ),
            "{err}"
        );
        let t = now();
        let err = b()
            .created_at(t)
            .expires_at(t - Duration::seconds(1))
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "expires_at",
                    ..
                }
            ),
            "{err}"
        );
        let err = b()
            .id(Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidField { field: "id", .. }),
            "{err}"
        );
        let err = b().conversation("has space").build().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "conversation",
                    ..
                }
            ),
            "{err}"
        );
        let err = Envelope::builder(e("comune:001272"), e("comune:001272"), "a.b", "x")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "recipient",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn xml_body_must_be_well_formed() {
        let b = || {
            Envelope::builder(
                e("comune:001272"),
                e("anpr:ministero"),
                "residenza.cambio",
                "richiesta",
            )
        };
        assert!(b().xml("<a xmlns=\"urn:x\"><b/></a>").build().is_ok());
        assert!(b().xml("").build().is_ok());
        let err = b().xml("<a><b></a>").build().unwrap_err();
        assert!(matches!(err, Error::InvalidBody(_)), "{err}");
        let err = b().xml("<!-- c --><a/>").build().unwrap_err();
        assert!(matches!(err, Error::InvalidBody(_)), "{err}");
    }
}
