//! The simulated federation: its members (the comuni of the reference list and the regional
//! and national bodies), their PKI, cached in a data directory, and the hub configuration of
//! each node that serves them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use snodo_envelopes::EntityId;
use snodo_envelopes::pki::{self, CertificateAuthority, KeyType, Subject, Validity};

use crate::comuni::{self, Comune, PROVINCES};

/// The region.
pub const REGION: &str = "regione:piemonte";
/// The national population registry.
pub const ANPR: &str = "anpr:ministero";
/// The motor registry.
pub const MOTOR_REGISTRY: &str = "mctc:motorizzazione";
/// The payment provider.
pub const PAYMENTS: &str = "pagopa:nodo";
/// The citizens' portal.
pub const PORTAL: &str = "portale:comunefacile";
/// A member that sends what must be refused (the `bad-input` fault).
pub const ROGUE: &str = "ente:abusivo";
/// The auditor that verifies the journal at the end of every run.
pub const AUDITOR: &str = "simulatore";

/// The load of `snodo-sim bench`: a one-way action from every comune to the region, with no
/// body schema, so that the hub's work is the envelope's own (parse, verify, journal, queue).
pub const BENCH: (&str, &str) = ("simulatore.carico", "misura");

/// The hub registries of the services the reference back offices implement, as shipped with
/// the connectors; merged by service name.
const REGISTRIES: [(&str, &str); 6] = [
    (
        "residenza",
        include_str!("../../connectors/examples/residenza/hub-services.toml"),
    ),
    (
        "tributi",
        include_str!("../../connectors/examples/tributi/hub-services.toml"),
    ),
    (
        "contravvenzioni",
        include_str!("../../connectors/examples/contravvenzioni/hub-services.toml"),
    ),
    (
        "ztl",
        include_str!("../../connectors/examples/ztl/hub-services.toml"),
    ),
    (
        "edilizia",
        include_str!("../../connectors/examples/edilizia/hub-services.toml"),
    ),
    (
        "viabilita",
        include_str!("../../connectors/examples/viabilita/hub-services.toml"),
    ),
];

/// The members and their PKI, on disk.
#[derive(Debug, Clone)]
pub struct Federation {
    /// Holds `pki/`.
    pub dir: PathBuf,
    /// The comuni, most populous first.
    pub comuni: Vec<Comune>,
    /// Every member, comuni first.
    pub members: Vec<EntityId>,
    /// The key type of every key.
    pub key_type: KeyType,
}

/// One hub node's place in a run: its name, where it listens, its data, its transport.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `hub.name`.
    pub name: String,
    /// The HTTPS listener.
    pub listen: SocketAddr,
    /// The plain-HTTP listener for /healthz, /readyz and /metrics.
    pub plain_listen: SocketAddr,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// `amqp://…` for the amqp transport, `None` for the embedded one.
    pub amqp: Option<(String, String)>,
    /// The other nodes, `(name, https url)`.
    pub peers: Vec<(String, String)>,
}

fn key_name(k: KeyType) -> &'static str {
    match k {
        KeyType::Rsa2048 => "rsa2048",
        KeyType::P256 => "p256",
    }
}

impl Federation {
    /// The federation of the `n` most populous comuni (all when `None`) of the list at
    /// `csv`, with its PKI in `data_dir/federation-<n>-<keys>/pki`: created when absent,
    /// completed when an earlier run was interrupted, reused otherwise.
    ///
    /// # Errors
    /// When the list cannot be read or the PKI cannot be written.
    pub fn ensure(
        data_dir: &Path,
        csv: &Path,
        n: Option<usize>,
        key_type: KeyType,
    ) -> anyhow::Result<Federation> {
        let all = comuni::load(csv)?;
        let comuni = comuni::most_populous(all, n);
        let dir = data_dir.join(format!(
            "federation-{}-{}",
            comuni.len(),
            key_name(key_type)
        ));
        let mut members: Vec<EntityId> = Vec::new();
        for c in &comuni {
            members.push(c.entity().parse()?);
        }
        for p in PROVINCES {
            members.push(format!("provincia:{p}").parse()?);
            members.push(format!("prefettura:{p}").parse()?);
        }
        for e in [REGION, ANPR, MOTOR_REGISTRY, PAYMENTS, PORTAL, ROGUE] {
            members.push(e.parse()?);
        }
        let fed = Federation {
            dir,
            comuni,
            members,
            key_type,
        };
        fed.ensure_pki()?;
        Ok(fed)
    }

    /// The directory of the PKI.
    #[must_use]
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// `entity`'s certificate and key.
    #[must_use]
    pub fn cert_and_key(&self, entity: &EntityId) -> (PathBuf, PathBuf) {
        let stem = entity.file_stem();
        (
            self.pki().join(format!("{stem}.crt")),
            self.pki().join(format!("{stem}.key")),
        )
    }

    /// The auditor's certificate and key.
    #[must_use]
    pub fn auditor(&self) -> (PathBuf, PathBuf) {
        (
            self.pki().join(format!("auditor-{AUDITOR}.crt")),
            self.pki().join(format!("auditor-{AUDITOR}.key")),
        )
    }

    /// A hub node's certificate and key (`hub.*` for the node named `hub`).
    #[must_use]
    pub fn hub_cert_and_key(&self, node: &str) -> (PathBuf, PathBuf) {
        let stem = if node == "hub" {
            "hub".to_owned()
        } else {
            format!("hub-{node}")
        };
        (
            self.pki().join(format!("{stem}.crt")),
            self.pki().join(format!("{stem}.key")),
        )
    }

    /// Creates what is missing of the PKI: the CA, then every subject's key and certificate,
    /// on every core (RSA keys take a while; a second run finds them all).
    fn ensure_pki(&self) -> anyhow::Result<()> {
        let pki_dir = self.pki();
        std::fs::create_dir_all(&pki_dir)
            .with_context(|| format!("creating {}", pki_dir.display()))?;
        if !pki_dir.join(pki::CA_KEY).exists() {
            // The CA and the node `hub`; the members follow.
            pki::init(&pki_dir, &[], self.key_type).context("creating the federation CA")?;
        }
        let ca = CertificateAuthority::load(&pki_dir).context("loading the federation CA")?;
        let mut missing: Vec<(Subject, PathBuf)> = Vec::new();
        for e in &self.members {
            let (cert, _) = self.cert_and_key(e);
            missing.push((Subject::Entity(e.clone()), cert));
        }
        missing.push((Subject::Auditor(AUDITOR.into()), self.auditor().0));
        for node in node_names(MAX_NODES) {
            missing.push((
                Subject::Hub {
                    name: node.clone(),
                    dns: Vec::new(),
                },
                self.hub_cert_and_key(&node).0,
            ));
        }
        missing.retain(|(_, cert)| !cert.exists());
        if missing.is_empty() {
            return Ok(());
        }
        eprintln!(
            "snodo-sim: creating {} keys and certificates in {}",
            missing.len(),
            pki_dir.display()
        );
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let chunk = missing.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = missing
                .chunks(chunk)
                .map(|part| {
                    let (ca, dir) = (&ca, &pki_dir);
                    s.spawn(move || -> anyhow::Result<()> {
                        for (subject, cert) in part {
                            // A key without its certificate is from an interrupted run.
                            let _ = std::fs::remove_file(cert.with_extension("key"));
                            let kind = match subject {
                                Subject::Hub { .. } => pki::HUB_KEY_TYPE,
                                _ => self.key_type,
                            };
                            pki::issue(dir, ca, subject, kind, Validity::default())?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a certificate thread panicked"))??;
            }
            Ok(())
        })
    }

    /// The comuni that follow the mobility news: the [`MAX_NEWS_COMUNI`] most populous.
    #[must_use]
    pub fn news_comuni(&self) -> Vec<EntityId> {
        self.members
            .iter()
            .filter(|e| e.as_str().starts_with("comune:"))
            .take(MAX_NEWS_COMUNI)
            .cloned()
            .collect()
    }

    /// The hub configuration of one node, as `snodo.toml` text.
    ///
    /// The per-entity request rate is lifted: a simulation measures the hub, not the policy
    /// that protects it from one partner.
    ///
    /// # Errors
    /// When the services' registries do not merge.
    pub fn hub_config(&self, node: &NodeConfig) -> anyhow::Result<String> {
        let (cert, key) = self.hub_cert_and_key(&node.name);
        let pki = self.pki();
        let mut c = String::new();
        writeln!(
            c,
            "[hub]\nname = \"{}\"\nlisten = \"{}\"\nplain_listen = \"{}\"\ndata_dir = {}\n",
            node.name,
            node.listen,
            node.plain_listen,
            toml_path(&node.data_dir)
        )?;
        writeln!(
            c,
            "[tls]\nca = {}\ncert = {}\nkey = {}\n",
            toml_path(&pki.join(pki::CA_CERT)),
            toml_path(&cert),
            toml_path(&key)
        )?;
        c.push_str(
            "[limits]\nrequests_per_second = 1000000\nburst = 1000000\nmax_connections_per_entity = 1024\n\n[journal]\ncheckpoint_interval = \"1s\"\n\n",
        );
        if let Some((url, prefix)) = &node.amqp {
            writeln!(
                c,
                "[transport]\nkind = \"amqp\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n"
            )?;
        }
        for (name, url) in &node.peers {
            writeln!(c, "[[peers]]\nname = \"{name}\"\nurl = \"{url}\"\n")?;
        }
        writeln!(c, "[[auditors]]\nname = \"{AUDITOR}\"\n")?;
        for e in &self.members {
            writeln!(c, "[[entities]]\nid = \"{e}\"")?;
        }
        c.push('\n');
        c.push_str(&registry(&self.news_comuni())?);
        Ok(c)
    }
}

/// How many comuni follow the mobility news, the most populous first: the hub fans each
/// event out to every subscriber, and in life the larger comuni and the provinces follow the
/// region's roads while a village of two hundred souls does not. A run of this many comuni or
/// fewer has every comune subscribed.
pub const MAX_NEWS_COMUNI: usize = 60;

/// The most hub nodes a run can have (each has a certificate in the PKI).
pub const MAX_NODES: usize = 8;

/// The names of `n` hub nodes: `hub` alone, or `n1`, `n2`….
#[must_use]
pub fn node_names(n: usize) -> Vec<String> {
    if n <= 1 {
        vec!["hub".to_owned()]
    } else {
        (1..=n).map(|i| format!("n{i}")).collect()
    }
}

fn toml_path(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// The registry of every service: the connectors' registries merged by service (an action
/// declared twice keeps its first declaration, which must agree), the subscriptions of all
/// (with `news_comuni` for the comuni of the mobility news), and the bench's action.
///
/// # Errors
/// When a registry does not parse or two declarations of one action disagree.
pub fn registry(news_comuni: &[EntityId]) -> anyhow::Result<String> {
    let mut services: BTreeMap<String, toml::Table> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut subscriptions: Vec<toml::Value> = Vec::new();
    let bench = format!(
        "[[services]]\nname = \"{}\"\n[[services.actions]]\nname = \"{}\"\nprofile = \"oneway\"\nsenders = [\"comune:*\"]\nrecipients = [\"{REGION}\"]\n",
        BENCH.0, BENCH.1
    );
    for (origin, text) in REGISTRIES
        .iter()
        .copied()
        .chain([("bench", bench.as_str())])
    {
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("the {origin} registry"))?;
        for (key, value) in doc {
            match (key.as_str(), value) {
                ("services", toml::Value::Array(list)) => {
                    for s in list {
                        let toml::Value::Table(mut s) = s else {
                            bail!("the {origin} registry: a service is not a table");
                        };
                        let name = s
                            .get("name")
                            .and_then(toml::Value::as_str)
                            .with_context(|| {
                                format!("the {origin} registry: a service without name")
                            })?
                            .to_owned();
                        let Some(into) = services.get_mut(&name) else {
                            order.push(name.clone());
                            services.insert(name, s);
                            continue;
                        };
                        let Some(toml::Value::Array(actions)) = s.remove("actions") else {
                            continue;
                        };
                        let have = into
                            .entry("actions")
                            .or_insert_with(|| toml::Value::Array(Vec::new()));
                        let toml::Value::Array(have) = have else {
                            bail!("service {name}: actions is not a list");
                        };
                        for a in actions {
                            let an = a.get("name").and_then(toml::Value::as_str);
                            match have
                                .iter()
                                .find(|h| h.get("name").and_then(toml::Value::as_str) == an)
                            {
                                Some(h) if *h != a => bail!(
                                    "the {origin} registry declares {name}/{} unlike an earlier registry",
                                    an.unwrap_or("?")
                                ),
                                Some(_) => {}
                                None => have.push(a),
                            }
                        }
                    }
                }
                ("subscriptions", toml::Value::Array(list)) => {
                    for mut s in list {
                        news_subscribers(&mut s, news_comuni);
                        if !subscriptions.contains(&s) {
                            subscriptions.push(s);
                        }
                    }
                }
                (other, _) => bail!("the {origin} registry: unexpected `{other}`"),
            }
        }
    }
    let mut doc = toml::Table::new();
    doc.insert(
        "services".into(),
        toml::Value::Array(
            order
                .iter()
                .filter_map(|n| services.remove(n))
                .map(toml::Value::Table)
                .collect(),
        ),
    );
    if !subscriptions.is_empty() {
        doc.insert("subscriptions".into(), toml::Value::Array(subscriptions));
    }
    Ok(toml::to_string(&doc)?)
}

/// In a subscription of the mobility news, `comune:*` becomes the comuni of `news_comuni`.
fn news_subscribers(subscription: &mut toml::Value, news_comuni: &[EntityId]) {
    let news =
        subscription.get("service").and_then(toml::Value::as_str) == Some("mobilita.viabilita");
    let Some(toml::Value::Array(subscribers)) = subscription.get_mut("subscribers") else {
        return;
    };
    if news && subscribers.iter().any(|v| v.as_str() == Some("comune:*")) {
        subscribers.retain(|v| v.as_str() != Some("comune:*"));
        subscribers.extend(
            news_comuni
                .iter()
                .map(|e| toml::Value::String(e.to_string())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_merges_every_service_once_and_the_hub_accepts_it() {
        let news: Vec<EntityId> = vec!["comune:001272".parse().unwrap()];
        let text = registry(&news).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let names: Vec<&str> = doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        for s in [
            "residenza.cambio",
            "pagamenti",
            "tributi.imu",
            "mobilita.contravvenzioni",
            "mobilita.ztl",
            "edilizia.permessi",
            "mobilita.viabilita",
            BENCH.0,
        ] {
            assert!(names.contains(&s), "{s} missing from {names:?}");
        }
    }

    #[test]
    fn a_federation_is_created_once_and_its_config_checks() {
        let dir = tempfile::tempdir().unwrap();
        let fed = Federation::ensure(dir.path(), &comuni::default_path(), Some(3), KeyType::P256)
            .unwrap();
        assert_eq!(fed.comuni.len(), 3);
        assert_eq!(fed.members[0].as_str(), "comune:001272");
        assert_eq!(fed.members.len(), 3 + 16 + 6);
        let (cert, key) = fed.cert_and_key(&fed.members[0]);
        assert!(cert.exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::metadata(&cert).unwrap().modified().unwrap();
        let again = Federation::ensure(dir.path(), &comuni::default_path(), Some(3), KeyType::P256)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&cert).unwrap().modified().unwrap(),
            before
        );
        let node = NodeConfig {
            name: "hub".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            plain_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            amqp: None,
            peers: Vec::new(),
        };
        let path = dir.path().join("snodo.toml");
        std::fs::write(&path, again.hub_config(&node).unwrap()).unwrap();
        let config = snodo_broker::config::Config::load(&path).unwrap();
        assert_eq!(config.entities.len(), fed.members.len());
    }
}
