//! The bodies of a simulation at work: every member's reference back offices (the connectors
//! crate's, unchanged) with their durable state in one store, each entity's inbox pulled by
//! its dispatcher, and every term on one simulated clock. A comune runs its registry, tax,
//! police, ZTL, building and traffic offices on one entity; each province its traffic office,
//! each prefecture its appeals office; the portal every citizen-facing role and a news board.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng;
use snodo_connectors::back_office::anpr::Anpr;
use snodo_connectors::back_office::comune::{Comune as Anagrafe, DatiComune, Via};
use snodo_connectors::back_office::motorizzazione::Motorizzazione;
use snodo_connectors::back_office::motorizzazione::{DatiMotorizzazione, Immatricolazione};
use snodo_connectors::back_office::portale::Portale as PortaleResidenza;
use snodo_connectors::clock::SharedClock;
use snodo_connectors::contravvenzioni::comando::{Comando, Impostazioni as ImpostazioniComando};
use snodo_connectors::contravvenzioni::portale::Portale as PortaleContravvenzioni;
use snodo_connectors::contravvenzioni::prefettura::{
    Impostazioni as ImpostazioniPrefettura, Prefettura,
};
use snodo_connectors::dispatch::{DispatcherBuilder, PullConfig};
use snodo_connectors::edilizia::oneri::{Tariffe, TariffeAnno};
use snodo_connectors::edilizia::portale::Portale as PortaleEdilizia;
use snodo_connectors::edilizia::sportello::{Impostazioni as ImpostazioniEdilizia, Sportello};
use snodo_connectors::mail::MailConfig;
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::service::Committer;
use snodo_connectors::tributi::calcolo::Aliquote;
use snodo_connectors::tributi::portale::Portale as PortaleTributi;
use snodo_connectors::tributi::ufficio::{AliquoteAnno, Impostazioni, Ufficio};
use snodo_connectors::viabilita::abbonato::Abbonato;
use snodo_connectors::viabilita::ufficio::Ufficio as UfficioViabilita;
use snodo_connectors::ztl::portale::Portale as PortaleZtl;
use snodo_connectors::ztl::ufficio::{
    Impostazioni as ImpostazioniZtl, RegolaCategoria, Settore, Ufficio as UfficioZtl,
};
use snodo_connectors::{Dispatcher, HubClient, HubClientConfig, ManualClock, RetryPolicy, Store};
use snodo_envelopes::{EntityId, Format};
use snodo_schemas::formats::{
    CodiceBelfiore, CodiceFiscale, CodiceIstat, Data, Importo, PuntiBase, Targa,
};
use snodo_schemas::services::dati::{Catasto, RiferimentoCatastale};
use snodo_schemas::services::mobilita_ztl::{Categoria as CategoriaZtl, Veicolo};
use snodo_schemas::services::tributi_imu::{Categoria, Immobile};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::comuni::{Comune, PROVINCES};
use crate::federation::{ANPR, Federation, MOTOR_REGISTRY, PAYMENTS, PORTAL};
use crate::population::{Citizen, HOUSE_NUMBERS, STREETS};

/// The most comuni that are creditors at the payment provider: a NAV's segregation code has
/// two digits, and the provider keeps positions by NAV; the codes above are the prefectures'.
pub const MAX_CREDITORS: usize = 100 - PROVINCES.len();

/// The ZTL sector every simulated comune has: its whole territory.
pub const ZTL_SECTOR: &str = "centro";

/// How long a body's pull holds the envelopes it takes: far longer than a handler takes, and
/// short beside the simulated terms. An envelope leased just before the hub is killed stays
/// hidden for this long after the restart (15 simulated days at a second a day), so a step
/// waits at least two leases (`run.rs`); with 60 s, a ZTL fee's answer came back after the
/// comune's 30-day term.
pub const PULL_LEASE: Duration = Duration::from_secs(15);

/// The document a resident's ZTL permit needs.
pub const ZTL_DOCUMENT: &str = "carta di circolazione";

/// A comune's offices.
#[derive(Debug)]
pub struct Municipio {
    /// Its line of the list.
    pub info: Comune,
    /// `comune:<istat>`.
    pub entity: EntityId,
    /// Its own codice fiscale (11 digits).
    pub codice_fiscale: CodiceFiscale,
    /// The registry office (residence, registry feed, TARI).
    pub anagrafe: Arc<Anagrafe>,
    /// The tax office (property tax).
    pub tributi: Arc<Ufficio>,
    /// The municipal police office (traffic fines).
    pub polizia: Arc<Comando>,
    /// The ZTL office (permits).
    pub ztl: Arc<UfficioZtl>,
    /// The building office (permits, SCIA, CILA).
    pub edilizia: Arc<Sportello>,
    /// The traffic office, publishing its mobility news.
    pub viabilita: Arc<UfficioViabilita>,
    /// Its board of the others' mobility news, if it follows them (the most populous do:
    /// [`crate::federation::MAX_NEWS_COMUNI`]).
    pub bacheca: Option<Arc<Abbonato>>,
    /// Whether it is a creditor at the payment provider.
    pub creditore: bool,
}

/// A province's offices.
#[derive(Debug)]
pub struct Provincia {
    /// `provincia:<XX>`.
    pub entity: EntityId,
    /// The traffic office, publishing its mobility news.
    pub viabilita: Arc<UfficioViabilita>,
    /// Its board of the others' mobility news.
    pub bacheca: Arc<Abbonato>,
    /// `prefettura:<XX>`.
    pub prefettura_entity: EntityId,
    /// The prefecture, deciding appeals against fines.
    pub prefettura: Arc<Prefettura>,
}

/// Every body of the federation, running.
#[derive(Debug)]
pub struct World {
    /// The simulated time of every back office.
    pub clock: Arc<ManualClock>,
    /// The comuni, by ISTAT code.
    pub comuni: BTreeMap<String, Municipio>,
    /// The population registry.
    pub anpr: Arc<Anpr>,
    /// The motor registry.
    pub mctc: Arc<Motorizzazione>,
    /// The payment provider.
    pub nodo: Arc<Nodo>,
    /// The portal, for residence.
    pub portale: Arc<PortaleResidenza>,
    /// The portal, for taxes and payments.
    pub portale_tributi: Arc<PortaleTributi>,
    /// The portal, for traffic fines.
    pub portale_contravvenzioni: Arc<PortaleContravvenzioni>,
    /// The portal, for ZTL permits.
    pub portale_ztl: Arc<PortaleZtl>,
    /// The portal, for building permits.
    pub portale_edilizia: Arc<PortaleEdilizia>,
    /// The portal's board of mobility news.
    pub bacheca: Arc<Abbonato>,
    /// The provinces (and their prefectures), by abbreviation.
    pub province: BTreeMap<String, Provincia>,
    /// Each citizen's car, by codice fiscale, registered at the motor registry.
    pub targhe: BTreeMap<String, Targa>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    loops: tokio::sync::Mutex<BTreeMap<String, Loop>>,
}

/// One entity's pull loop, which a fault can stop and start again.
#[derive(Debug)]
struct Loop {
    /// How it pulls.
    pull: PullConfig,
    dispatcher: Arc<Dispatcher>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A comune's codice fiscale: 11 digits from its ISTAT code, with a valid check digit.
#[must_use]
pub fn codice_fiscale_comune(istat: &str) -> Option<CodiceFiscale> {
    let first10 = format!("80{istat}00");
    let check = CodiceFiscale::check_digit(&first10)?;
    CodiceFiscale::parse(&format!("{first10}{check}")).ok()
}

/// The letters of Italian plates (no I, O, Q, U).
const PLATE_LETTERS: &[u8; 22] = b"ABCDEFGHJKLMNPRSTVWXYZ";

/// The `n`th car plate, `AA000AA`: distinct for every `n` below 234 million.
#[must_use]
pub fn targa(n: usize) -> Option<Targa> {
    let mut rest = n / 1000;
    let mut letters = [b'A'; 4];
    for l in letters.iter_mut().rev() {
        *l = PLATE_LETTERS[rest % PLATE_LETTERS.len()];
        rest /= PLATE_LETTERS.len();
    }
    let s = format!(
        "{}{}{:03}{}{}",
        char::from(letters[0]),
        char::from(letters[1]),
        n % 1000,
        char::from(letters[2]),
        char::from(letters[3])
    );
    Targa::parse(&s).ok()
}

/// A prefecture's codice fiscale: 11 digits from its province, with a valid check digit.
#[must_use]
pub fn codice_fiscale_prefettura(index: usize) -> Option<CodiceFiscale> {
    let first10 = format!("8009{index:04}01");
    let check = CodiceFiscale::check_digit(&first10)?;
    CodiceFiscale::parse(&format!("{first10}{check}")).ok()
}

fn client(
    fed: &Federation,
    entity: &EntityId,
    url: &str,
    format: Format,
) -> anyhow::Result<HubClient> {
    let (cert, key) = fed.cert_and_key(entity);
    let mut c = HubClientConfig::new(url.to_owned(), fed.pki().join("ca.crt"), cert, key);
    c.format = format;
    // Partners keep trying through a hub node's restart or RabbitMQ's (a minute or so).
    c.retry = RetryPolicy {
        attempts: 30,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(3),
    };
    Ok(HubClient::new(&c)?)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A property of `citizen` in its comune: the main home, or a second one.
#[must_use]
pub fn immobile(
    citizen: &Citizen,
    belfiore: &str,
    principale: bool,
    rendita_euro: u64,
) -> Option<Immobile> {
    Some(Immobile {
        catasto: RiferimentoCatastale {
            comune: CodiceBelfiore::parse(belfiore).ok()?,
            catasto: Catasto::Fabbricati,
            sezione: None,
            foglio: "1".into(),
            particella: citizen.cf[..6].to_owned(),
            subalterno: Some(if principale { "1" } else { "2" }.into()),
        },
        categoria: Some(Categoria(if principale { "A/2" } else { "A/3" }.into())),
        rendita: Importo::euro(rendita_euro)?,
        quota: PuntiBase::TUTTO,
        abitazione_principale: principale,
        riduzione: None,
    })
}

impl World {
    /// Starts every body for `citizens` against the hub at `url`, in `store`, writing the
    /// officials' mail as `.eml` files under `mail`, on a clock set to `start`. Comuni with an odd ISTAT code sign XML, the others JSON.
    ///
    /// # Errors
    /// When a back office cannot be set up.
    pub async fn start(
        fed: &Federation,
        url: &str,
        citizens: &[Citizen],
        second_homes: &[String],
        store: &Store,
        mail: &std::path::Path,
        start: OffsetDateTime,
    ) -> anyhow::Result<World> {
        let clock = Arc::new(ManualClock::new(start));
        let shared: SharedClock = clock.clone();
        let (stop, shutdown) = watch::channel(false);
        let mut tasks = Vec::new();
        // Every inbox is long-polled: the hub answers as soon as envelopes arrive, and an
        // idle body costs it one request per `idle`.
        let idle = Duration::from_secs(5);
        let pull = PullConfig {
            batch: 32,
            lease: PULL_LEASE,
            idle,
        };
        let mut loops = BTreeMap::new();
        let mut run = |entity: &EntityId,
                       builder: DispatcherBuilder,
                       c: HubClient,
                       s: Store|
         -> anyhow::Result<()> {
            let d = Arc::new(
                builder
                    .build(c, s)
                    .map_err(err)
                    .with_context(|| format!("{entity}'s dispatcher"))?,
            );
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(Dispatcher::run_pull(d.clone(), pull, rx));
            loops.insert(
                entity.to_string(),
                Loop {
                    dispatcher: d,
                    stop,
                    task: Some(task),
                    pull,
                },
            );
            Ok(())
        };
        let entity = |s: &str| s.parse::<EntityId>();

        let mut creditori = Vec::new();
        for (i, c) in fed.comuni.iter().take(MAX_CREDITORS).enumerate() {
            creditori.push(Creditore {
                entity: entity(&c.entity())?,
                codice_fiscale: codice_fiscale_comune(&c.istat)
                    .context("a comune's codice fiscale")?,
                denominazione: format!("Comune di {}", c.name),
                segregazione: u8::try_from(i)?,
            });
        }
        for (i, p) in PROVINCES.iter().enumerate() {
            creditori.push(Creditore {
                entity: entity(&format!("prefettura:{p}"))?,
                codice_fiscale: codice_fiscale_prefettura(i)
                    .context("a prefecture's codice fiscale")?,
                denominazione: format!("Prefettura di {p}"),
                segregazione: u8::try_from(MAX_CREDITORS + i)?,
            });
        }
        let nodo_id = entity(PAYMENTS)?;
        let ns = store.namespace(PAYMENTS);
        let c = client(fed, &nodo_id, url, Format::Json)?;
        let nodo = Nodo::open(
            c.clone(),
            ns.clone(),
            shared.clone(),
            NodoImpostazioni {
                creditori,
                token_secondi: 30 * 60,
                token_sportello_secondi: 3 * 24 * 3600,
            },
        )
        .map_err(err)?;
        run(&nodo_id, nodo.install(Dispatcher::builder()), c, ns)?;
        tasks.push(tokio::spawn(nodo.clone().run(shutdown.clone())));

        let anpr_id = entity(ANPR)?;
        let ns = store.namespace(ANPR);
        let c = client(fed, &anpr_id, url, Format::Json)?;
        let anpr = Anpr::new(
            Committer::new(c.clone(), ns.clone())?,
            Default::default(),
            shared.clone(),
        )
        .map_err(err)?;
        run(&anpr_id, anpr.install(Dispatcher::builder()), c, ns)?;

        let mctc_id = entity(MOTOR_REGISTRY)?;
        let ns = store.namespace(MOTOR_REGISTRY);
        let c = client(fed, &mctc_id, url, Format::Json)?;
        let mctc = Motorizzazione::new(Committer::new(c.clone(), ns.clone())?).map_err(err)?;
        let mut targhe = BTreeMap::new();
        let mut veicoli = Vec::new();
        for (n, x) in citizens.iter().enumerate() {
            let t = targa(n).context("a citizen's plate")?;
            veicoli.push(Immatricolazione {
                targa: t.clone(),
                veicolo: Veicolo {
                    intestatario: CodiceFiscale::parse(&x.cf).map_err(err)?,
                    tipo: "autovettura".into(),
                    classe_euro: 6,
                    alimentazione: "benzina".into(),
                },
            });
            targhe.insert(x.cf.clone(), t);
        }
        mctc.carica(&DatiMotorizzazione { veicoli }).map_err(err)?;
        run(&mctc_id, mctc.install(Dispatcher::builder()), c, ns)?;

        let portal_id = entity(PORTAL)?;
        let ns = store.namespace(PORTAL);
        let c = client(fed, &portal_id, url, Format::Json)?;
        let portale = PortaleResidenza::new(Committer::new(c.clone(), ns.clone())?, shared.clone())
            .map_err(err)?;
        let portale_tributi = PortaleTributi::open(c.clone(), ns.clone(), nodo_id.clone())?;
        let portale_contravvenzioni =
            PortaleContravvenzioni::open(c.clone(), ns.clone(), nodo_id.clone()).map_err(err)?;
        let portale_ztl = PortaleZtl::open(c.clone(), ns.clone(), nodo_id.clone()).map_err(err)?;
        let portale_edilizia =
            PortaleEdilizia::open(c.clone(), ns.clone(), shared.clone(), nodo_id.clone())
                .map_err(err)?;
        let bacheca = Abbonato::open(&ns).map_err(err)?;
        let mut builder = portale.install(Dispatcher::builder());
        builder = portale_tributi.install(builder);
        builder = portale_contravvenzioni.install(builder);
        builder = portale_ztl.install(builder);
        builder = portale_edilizia.install(builder);
        builder = bacheca.install(builder);
        run(&portal_id, builder, c, ns)?;

        let mut province = BTreeMap::new();
        for (i, p) in PROVINCES.iter().enumerate() {
            let id = entity(&format!("provincia:{p}"))?;
            let ns = store.namespace(id.as_str());
            let c = client(fed, &id, url, Format::Json)?;
            let viabilita = Arc::new(
                UfficioViabilita::open(c.clone(), ns.clone(), shared.clone()).map_err(err)?,
            );
            let bacheca = Abbonato::open(&ns).map_err(err)?;
            run(&id, bacheca.install(Dispatcher::builder()), c, ns)?;
            let pid = entity(&format!("prefettura:{p}"))?;
            let ns = store.namespace(pid.as_str());
            let c = client(fed, &pid, url, Format::Json)?;
            let prefettura = Prefettura::open(
                c.clone(),
                ns.clone(),
                shared.clone(),
                ImpostazioniPrefettura {
                    denominazione: format!("Prefettura di {p}"),
                    codice_fiscale: codice_fiscale_prefettura(i)
                        .context("a prefecture's codice fiscale")?,
                    iban: "IT02L1234512345123456789012".into(),
                    nodo: nodo_id.clone(),
                },
            )
            .map_err(err)?;
            tasks.push(tokio::spawn(prefettura.clone().run(shutdown.clone())));
            run(&pid, prefettura.install(Dispatcher::builder()), c, ns)?;
            province.insert(
                (*p).to_owned(),
                Provincia {
                    entity: id,
                    viabilita,
                    bacheca,
                    prefettura_entity: pid,
                    prefettura,
                },
            );
        }

        let istat_all: Vec<CodiceIstat> = fed
            .comuni
            .iter()
            .filter_map(|c| CodiceIstat::parse(&c.istat).ok())
            .collect();
        let mut comuni = BTreeMap::new();
        // The comuni of the mobility news are the registry's subscribers, no others.
        let news = fed.news_comuni();
        for (i, info) in fed.comuni.iter().enumerate() {
            let id = entity(&info.entity())?;
            let ns = store.namespace(id.as_str());
            let odd = info
                .istat
                .bytes()
                .last()
                .is_some_and(|b| (b - b'0') % 2 == 1);
            let c = client(fed, &id, url, if odd { Format::Xml } else { Format::Json })?;
            let residenti = citizens
                .iter()
                .filter(|x| x.comune == info.istat)
                .map(|x| serde_json::from_value(x.posizione()))
                .collect::<Result<Vec<_>, _>>()
                .context("a simulated resident")?;
            let anagrafe = Anagrafe::new(
                Committer::new(c.clone(), ns.clone())?,
                DatiComune {
                    stradario: STREETS
                        .iter()
                        .map(|s| Via {
                            nome: (*s).to_owned(),
                            civici: Some(u32::from(HOUSE_NUMBERS)),
                        })
                        .collect(),
                    comuni: istat_all.clone(),
                    ufficiale: None,
                    posta: None,
                    residenti,
                    anpr: ANPR.into(),
                },
                shared.clone(),
            )
            .map_err(err)
            .with_context(|| format!("{id}'s registry office"))?;
            tasks.extend(anagrafe.start(shutdown.clone()));
            let cf = codice_fiscale_comune(&info.istat).context("a comune's codice fiscale")?;
            let rate = |o| Aliquote {
                ordinaria: PuntiBase::new(o).unwrap_or(PuntiBase::TUTTO),
                abitazione_principale: PuntiBase::new(60).unwrap_or(PuntiBase::TUTTO),
                terreni: PuntiBase::new(76).unwrap_or(PuntiBase::TUTTO),
                detrazione: Importo::centesimi(20_000),
            };
            let ordinaria = 86 + u16::try_from(i % 21).unwrap_or(0);
            let tributi = Ufficio::open(
                c.clone(),
                ns.clone(),
                shared.clone(),
                Impostazioni {
                    comune: CodiceIstat::parse(&info.istat).map_err(err)?,
                    denominazione: format!("Comune di {}", info.name),
                    codice_fiscale: cf.clone(),
                    iban: "IT60X0542811101000000123456".into(),
                    nodo: nodo_id.clone(),
                    portale: portal_id.clone(),
                    email_ufficio: format!("tributi@comune{}.example.it", info.istat),
                    posta: MailConfig {
                        from: format!("tributi@comune{}.example.it", info.istat),
                        smtp: None,
                        directory: Some(mail.join(&info.istat)),
                    },
                    aliquote: [2026u16, 2027, 2028]
                        .into_iter()
                        .map(|anno| AliquoteAnno {
                            anno,
                            aliquote: rate(ordinaria),
                        })
                        .collect(),
                },
            )
            .map_err(err)
            .with_context(|| format!("{id}'s tax office"))?;
            let dal = Data::parse("2015-01-01").map_err(err)?;
            for x in citizens.iter().filter(|x| x.comune == info.istat) {
                let cfx = CodiceFiscale::parse(&x.cf).map_err(err)?;
                if tributi.titolarita(&cfx)?.is_empty() {
                    if let Some(home) = immobile(x, &info.belfiore, true, 500) {
                        tributi.registra(&cfx, home, dal).await.map_err(err)?;
                    }
                    if second_homes.contains(&x.cf)
                        && let Some(second) = immobile(
                            x,
                            &info.belfiore,
                            false,
                            400 + rand::rng().random_range(0..600),
                        )
                    {
                        tributi.registra(&cfx, second, dal).await.map_err(err)?;
                    }
                }
            }
            let polizia = Comando::open(
                c.clone(),
                ns.clone(),
                shared.clone(),
                ImpostazioniComando {
                    comune: CodiceIstat::parse(&info.istat).map_err(err)?,
                    denominazione: format!("Comune di {}", info.name),
                    codice_fiscale: cf.clone(),
                    iban: "IT60X0542811101000000123456".into(),
                    nodo: nodo_id.clone(),
                    portale: portal_id.clone(),
                    prefettura: entity(&format!("prefettura:{}", info.province))?,
                },
            )
            .map_err(err)
            .with_context(|| format!("{id}'s police office"))?;
            tasks.push(tokio::spawn(polizia.clone().run(shutdown.clone())));
            let regola = |categoria, euro, documenti: &[&str], giorni| RegolaCategoria {
                categoria,
                tariffa: Importo::centesimi(euro * 100),
                documenti: documenti.iter().map(|d| (*d).to_owned()).collect(),
                giorni_massimi: giorni,
            };
            let ztl = UfficioZtl::new(
                Committer::new(c.clone(), ns.clone())?,
                ImpostazioniZtl {
                    comune: CodiceIstat::parse(&info.istat).map_err(err)?,
                    denominazione: format!("Comune di {}", info.name),
                    codice_fiscale: cf.clone(),
                    iban: "IT60X0542811101000000123456".into(),
                    nodo: nodo_id.clone(),
                    anpr: anpr_id.clone(),
                    motorizzazione: mctc_id.clone(),
                    settori: vec![Settore {
                        codice: ZTL_SECTOR.into(),
                        vie: Vec::new(),
                    }],
                    categorie: vec![
                        regola(CategoriaZtl::Residente, 30u64, &[ZTL_DOCUMENT], None),
                        regola(CategoriaZtl::Temporaneo, 10, &[], Some(30)),
                    ],
                    posta: Some(MailConfig {
                        from: format!("ztl@comune{}.example.it", info.istat),
                        smtp: None,
                        directory: Some(mail.join(format!("{}-ztl", info.istat))),
                    }),
                },
                shared.clone(),
            )
            .map_err(err)
            .with_context(|| format!("{id}'s ZTL office"))?;
            tasks.extend(ztl.start(&shutdown));
            let euro = |e: u64| Importo::centesimi(e * 100);
            let edilizia = Sportello::open(
                c.clone(),
                ns.clone(),
                shared.clone(),
                ImpostazioniEdilizia {
                    comune: CodiceIstat::parse(&info.istat).map_err(err)?,
                    denominazione: format!("Comune di {}", info.name),
                    codice_fiscale: cf.clone(),
                    iban: "IT60X0542811101000000123456".into(),
                    nodo: nodo_id.clone(),
                    responsabile: format!("Ufficio tecnico del Comune di {}", info.name),
                    giorni_integrazione: 30,
                    giorni_pagamento: 30,
                    tariffe: [2026u16, 2027, 2028]
                        .into_iter()
                        .map(|anno| TariffeAnno {
                            anno,
                            tariffe: Tariffe {
                                primaria_mc: Importo::centesimi(1_000 + 50 * (i as u64 % 6)),
                                secondaria_mc: Importo::centesimi(1_500),
                                quota_costo: PuntiBase::new(500).unwrap_or(PuntiBase::TUTTO),
                                diritti_permesso: euro(150),
                                diritti_scia: euro(100),
                                diritti_cila: euro(50),
                            },
                        })
                        .collect(),
                },
            )
            .map_err(err)
            .with_context(|| format!("{id}'s building office"))?;
            tasks.push(tokio::spawn(edilizia.clone().run(shutdown.clone())));
            let viabilita = Arc::new(
                UfficioViabilita::open(c.clone(), ns.clone(), shared.clone()).map_err(err)?,
            );
            let mut builder = anagrafe.install(Dispatcher::builder());
            builder = tributi.install(builder);
            builder = polizia.install(builder);
            builder = ztl.install(builder);
            builder = edilizia.install(builder);
            let bacheca = if news.contains(&id) {
                let b = Abbonato::open(&ns).map_err(err)?;
                builder = b.install(builder);
                Some(b)
            } else {
                None
            };
            run(&id, builder, c, ns)?;
            comuni.insert(
                info.istat.clone(),
                Municipio {
                    info: info.clone(),
                    entity: id,
                    codice_fiscale: cf,
                    anagrafe,
                    tributi,
                    polizia,
                    ztl,
                    edilizia,
                    viabilita,
                    bacheca,
                    creditore: i < MAX_CREDITORS,
                },
            );
        }
        Ok(World {
            clock,
            comuni,
            anpr,
            mctc,
            nodo,
            portale,
            portale_tributi,
            portale_contravvenzioni,
            portale_ztl,
            portale_edilizia,
            bacheca,
            province,
            targhe,
            stop,
            tasks,
            loops: tokio::sync::Mutex::new(loops),
        })
    }

    /// The entities whose inboxes are pulled.
    pub async fn entities(&self) -> Vec<String> {
        self.loops.lock().await.keys().cloned().collect()
    }

    /// Stops pulling `entity`'s inbox (its systems are down); what arrives waits at the hub.
    pub async fn pause(&self, entity: &str) {
        let task = {
            let mut loops = self.loops.lock().await;
            let Some(l) = loops.get_mut(entity) else {
                return;
            };
            let _ = l.stop.send(true);
            l.task.take()
        };
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Pulls `entity`'s inbox again.
    pub async fn resume(&self, entity: &str) {
        let mut loops = self.loops.lock().await;
        let Some(l) = loops.get_mut(entity) else {
            return;
        };
        if l.task.is_none() {
            let (stop, rx) = watch::channel(false);
            l.stop = stop;
            l.task = Some(tokio::spawn(Dispatcher::run_pull(
                l.dispatcher.clone(),
                l.pull,
                rx,
            )));
        }
    }

    /// Stops every dispatcher and task and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut loops = self.loops.into_inner();
        // All at once: each ends its long poll first.
        for l in loops.values() {
            let _ = l.stop.send(true);
        }
        for l in loops.values_mut() {
            if let Some(t) = l.task.take() {
                let _ = t.await;
            }
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..50_000).chain([233_000_000, 234_255_999]) {
            let t = targa(n).unwrap_or_else(|| panic!("plate {n}"));
            assert!(seen.insert(t.as_str().to_owned()), "{n}: {}", t.as_str());
        }
        assert_eq!(targa(0).unwrap().as_str(), "AA000AA");
        assert_eq!(targa(1_001).unwrap().as_str(), "AA001AB");
    }

    #[test]
    fn prefectures_and_comuni_have_valid_codici_fiscali_of_their_own() {
        let prefetture: Vec<_> = (0..PROVINCES.len())
            .map(|i| codice_fiscale_prefettura(i).unwrap())
            .collect();
        let comune = codice_fiscale_comune("001272").unwrap();
        for (i, p) in prefetture.iter().enumerate() {
            assert_ne!(*p, comune);
            assert!(!prefetture[..i].contains(p));
        }
        assert_eq!(MAX_CREDITORS + PROVINCES.len(), 100);
    }
}
