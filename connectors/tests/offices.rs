//! One comune, several creditor offices, one inbox: Turin runs its tax office, its municipal
//! police, its ZTL office and its building office in ONE dispatcher, over a real hub on
//! 127.0.0.1 (real TLS, signed envelopes, bodies checked against the catalog), with the
//! payment provider, the motor registry and the portal (its four roles in one dispatcher too),
//! on one `ManualClock`. A property-tax notice, a fine, a ZTL fee and building fees are paid;
//! each office closes exactly its own notice on the provider's receipt, and takes its own part
//! of the settlement flow that lists all four. Then `snodo-connector` runs the same four
//! offices from one configuration (`examples/uffici/comune-001272.toml`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{eventually, url};
use serde_json::json;
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_connectors::back_office::motorizzazione::{
    DatiMotorizzazione, Immatricolazione, Motorizzazione,
};
use snodo_connectors::clock::{Clock, SharedClock};
use snodo_connectors::contravvenzioni::comando::{self, Comando, NuovoVerbale};
use snodo_connectors::contravvenzioni::portale::Portale as PortaleMulte;
use snodo_connectors::dispatch::{DispatcherBuilder, PullConfig};
use snodo_connectors::edilizia::documenti::sha256;
use snodo_connectors::edilizia::oneri::{Tariffe, TariffeAnno};
use snodo_connectors::edilizia::portale::Portale as PortaleEdilizia;
use snodo_connectors::edilizia::sportello::{self, Sportello};
use snodo_connectors::mail::MailConfig;
use snodo_connectors::pagamenti::{Creditore, Impostazioni as NodoImpostazioni, Nodo};
use snodo_connectors::service::Committer;
use snodo_connectors::tributi::portale::Portale as PortaleTributi;
use snodo_connectors::tributi::ufficio::{self, Ufficio};
use snodo_connectors::ztl::portale::Portale as PortaleZtl;
use snodo_connectors::ztl::ufficio::{self as ztl, RegolaCategoria, Settore};
use snodo_connectors::{Dispatcher, HubClient, HubClientConfig, ManualClock, RetryPolicy, Store};
use snodo_envelopes::EntityId;
use snodo_envelopes::pki::{self, KeyType};
use snodo_schemas::formats::{
    CodiceBelfiore, CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Elenco, Importo,
    Istante, PuntiBase, Targa,
};
use snodo_schemas::services::dati::{
    Catasto, Documento, Indirizzo, RiferimentoCatastale, Soggetto,
};
use snodo_schemas::services::edilizia_permessi::{Contenuto, Intervento, Istanza, Tecnico, Titolo};
use snodo_schemas::services::mobilita_contravvenzioni::{Criterio, StatoVerbale, TipoAvviso};
use snodo_schemas::services::mobilita_ztl::{Categoria, Domanda, StatoPermesso, Veicolo};
use snodo_schemas::services::pagamenti::{
    Canale, EsitoAttivazione, EsitoRegistrato, EsitoVerifica, Risultato,
};
use snodo_schemas::services::tributi_imu::{
    CalcoloEsito, CalcoloRichiesta, Categoria as CategoriaCatastale, Immobile, Rata,
};
use time::macros::datetime;
use tokio::sync::watch;

const TORINO: &str = "comune:001272";
const MCTC: &str = "mctc:motorizzazione";
const NODO: &str = "pagopa:nodo";
const PORTALE: &str = "portale:comunefacile";
const PREFETTURA: &str = "prefettura:TO";
const TORINO_CF: &str = "00514490010";
const CF: &str = "RSSMRA85T10A562S";

/// The registry: each service's example registry, with `pagamenti` once (the fines' section,
/// which is the others' plus the prefectures).
fn registry() -> String {
    let senza_pagamenti = |text: &str| -> String {
        text.split("[[services]]")
            .enumerate()
            .filter(|(i, part)| *i == 0 || !part.trim_start().starts_with("name = \"pagamenti\""))
            .map(|(i, part)| {
                if i == 0 {
                    part.to_owned()
                } else {
                    format!("[[services]]{part}")
                }
            })
            .collect()
    };
    [
        include_str!("../examples/contravvenzioni/hub-services.toml").to_owned(),
        senza_pagamenti(include_str!("../examples/tributi/hub-services.toml")),
        senza_pagamenti(include_str!("../examples/edilizia/hub-services.toml")),
        senza_pagamenti(include_str!("../examples/ztl/hub-services.toml")),
    ]
    .join("\n")
}

fn cf(s: &str) -> CodiceFiscale {
    CodiceFiscale::parse(s).unwrap()
}

fn euro(e: u64) -> Importo {
    Importo::euro(e).unwrap()
}

fn istante(t: time::OffsetDateTime) -> Istante {
    snodo_connectors::back_office::istante(t).unwrap()
}

fn client_of(dir: &std::path::Path, hub: &Running, entity: &str) -> HubClient {
    let stem = entity.parse::<EntityId>().unwrap().file_stem();
    let pki = dir.join("pki");
    let mut c = HubClientConfig::new(
        url(hub),
        pki.join("ca.crt"),
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    );
    c.retry = RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    HubClient::new(&c).unwrap()
}

/// The dispatcher of `builder`, pulling its inbox until `shutdown`.
fn tira(
    builder: DispatcherBuilder,
    client: HubClient,
    store: Store,
    shutdown: watch::Receiver<bool>,
) -> Arc<Dispatcher> {
    let d = Arc::new(builder.build(client, store).unwrap());
    tokio::spawn(d.clone().run_pull(
        PullConfig {
            batch: 16,
            lease: Duration::from_secs(30),
            idle: Duration::from_millis(20),
        },
        shutdown,
    ));
    d
}

/// A building held by Rossi, not his main residence: the tax is due.
fn seconda_casa() -> Immobile {
    Immobile {
        catasto: RiferimentoCatastale {
            comune: CodiceBelfiore::parse("L219").unwrap(),
            catasto: Catasto::Fabbricati,
            sezione: None,
            foglio: "12".into(),
            particella: "345".into(),
            subalterno: Some("6".into()),
        },
        categoria: Some(CategoriaCatastale("A/2".into())),
        rendita: euro(1000),
        quota: PuntiBase::TUTTO,
        abitazione_principale: false,
        riduzione: None,
    }
}

/// Speeding, notified today: €173 to €695 and €14.70 of costs.
fn verbale(numero: &str) -> NuovoVerbale {
    NuovoVerbale {
        numero: numero.into(),
        il: Istante::parse("2026-02-27T08:30:00Z").unwrap(),
        luogo: "Corso Francia 100, Torino".into(),
        norma: "art. 142 c. 8 CdS".into(),
        descrizione: "Velocità superiore di oltre 10 km/h al limite".into(),
        targa: Targa::parse("AB123CD").unwrap(),
        trasgressore: Soggetto {
            codice_fiscale: cf(CF),
            denominazione: "Mario Rossi".into(),
            indirizzo: None,
            email: None,
        },
        minimo: euro(173),
        massimo: euro(695),
        spese: Importo::centesimi(1470),
        punti: Some(3),
        sanzione_accessoria: false,
    }
}

/// A temporary ZTL permit for a visiting car: no residence to check, a €10 fee.
fn domanda_ztl(pratica: &str) -> Domanda {
    serde_json::from_value(json!({
        "pratica": pratica,
        "comune": "001272",
        "tipo": "rilascio",
        "categoria": "temporaneo",
        "richiedente": CF,
        "targhe": ["AB123CD"],
        "settori": ["A"],
        "periodo": {"dal": "2026-03-02", "al": "2026-03-20"},
        "allegati": [],
        "email": "cittadino@example.it",
    }))
    .unwrap()
}

const RELAZIONE: &[u8] = b"%PDF-1.7 relazione tecnica asseverata";

/// A CILA: the secretariat fees only.
fn cila(pratica: &str) -> Istanza {
    Istanza {
        pratica: pratica.into(),
        comune: CodiceIstat::parse("001272").unwrap(),
        titolo: Titolo::Cila,
        richiedente: cf(CF),
        tecnico: Tecnico {
            codice_fiscale: CodiceFiscalePersona::parse("MRTMTT25D09F205Z").unwrap(),
            nome: "Matteo Martini".into(),
            albo: "Ordine degli Architetti di Torino n. 1234".into(),
            pec: "matteo.martini@pec.example.it".into(),
        },
        indirizzo: Indirizzo {
            comune: CodiceIstat::parse("001272").unwrap(),
            via: "Via Giuseppe Garibaldi".into(),
            civico: "12".into(),
            scala: None,
            piano: None,
            interno: None,
            cap: None,
        },
        catasto: Elenco::new(vec![RiferimentoCatastale {
            comune: CodiceBelfiore::parse("L219").unwrap(),
            catasto: Catasto::Fabbricati,
            sezione: None,
            foglio: "12".into(),
            particella: "345".into(),
            subalterno: Some("6".into()),
        }])
        .unwrap(),
        intervento: Intervento {
            descrizione: "Manutenzione straordinaria interna".into(),
            superficie_mq: 40,
            volume_mc: 0,
            costo_costruzione: euro(20_000),
        },
        area_vincolata: false,
        allegati: Elenco::new(vec![Documento {
            tipo: "elaborato di progetto".into(),
            nome: "relazione.pdf".into(),
            media_type: "application/pdf".into(),
            sha256: sha256(RELAZIONE),
            dimensione: RELAZIONE.len() as u64,
        }])
        .unwrap(),
        contenuti: vec![Contenuto {
            nome: "relazione.pdf".into(),
            base64: STANDARD.encode(RELAZIONE),
        }],
    }
}

/// The hub and every body running; Turin's four offices share one dispatcher, and so do the
/// portal's four roles.
struct Federazione {
    /// The hub and the bodies around Turin.
    e: Intorno,
    torino: Arc<Dispatcher>,
    tributi: Arc<Ufficio>,
    comando: Arc<Comando>,
    ztl: Arc<ztl::Ufficio>,
    sportello: Arc<Sportello>,
}

impl std::ops::Deref for Federazione {
    type Target = Intorno;
    fn deref(&self) -> &Intorno {
        &self.e
    }
}

/// Everything but Turin: the hub, the provider, the motor registry and the portal (its four
/// roles in one dispatcher).
struct Intorno {
    dir: tempfile::TempDir,
    hub: Running,
    clock: ManualClock,
    shared: SharedClock,
    stop: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
    nodo: Arc<Nodo>,
    portale: Arc<Dispatcher>,
    p_tributi: Arc<PortaleTributi>,
    p_multe: Arc<PortaleMulte>,
    p_ztl: Arc<PortaleZtl>,
    p_edilizia: Arc<PortaleEdilizia>,
}

impl Intorno {
    async fn avvia() -> Intorno {
        let dir = tempfile::tempdir().unwrap();
        // The prefecture and ANPR are named by the registry (appeals, residence checks), not
        // used here.
        let ids = [TORINO, MCTC, NODO, PORTALE, PREFETTURA, "anpr:ministero"];
        let entities: Vec<EntityId> = ids.iter().map(|e| e.parse().unwrap()).collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let entities_toml: String = ids
            .iter()
            .map(|e| format!("[[entities]]\nid = \"{e}\"\n"))
            .collect();
        let config = format!(
            "[hub]\nname = \"hub\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n\
             [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/hub.crt\"\nkey = \"pki/hub.key\"\n\n\
             [journal]\ncheckpoint_interval = \"100ms\"\n\n{entities_toml}\n{}",
            registry()
        );
        let path = dir.path().join("snodo.toml");
        std::fs::write(&path, config).unwrap();
        let hub = serve::start(Config::load(&path).unwrap(), Some(path.clone()))
            .await
            .unwrap();
        let clock = ManualClock::new(datetime!(2026-03-02 09:00 UTC));
        let shared: SharedClock = Arc::new(clock.clone());
        let (stop, shutdown) = watch::channel(false);
        let body = |entity: &str| {
            let client = client_of(dir.path(), &hub, entity);
            let stem = entity.parse::<EntityId>().unwrap().file_stem();
            let store = Store::open(&dir.path().join(format!("state-{stem}"))).unwrap();
            (client, store)
        };

        let (client, store) = body(NODO);
        let nodo = Nodo::open(
            client.clone(),
            store.clone(),
            shared.clone(),
            NodoImpostazioni {
                creditori: vec![Creditore {
                    entity: TORINO.parse().unwrap(),
                    codice_fiscale: cf(TORINO_CF),
                    denominazione: "Comune di Torino".into(),
                    segregazione: 1,
                }],
                token_secondi: 30 * 60,
                token_sportello_secondi: 3 * 24 * 3600,
            },
        )
        .unwrap();
        tira(
            nodo.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        );
        tokio::spawn(nodo.clone().run(shutdown.clone()));

        let (client, store) = body(MCTC);
        let mctc =
            Motorizzazione::new(Committer::new(client.clone(), store.clone()).unwrap()).unwrap();
        mctc.carica(&DatiMotorizzazione {
            veicoli: vec![Immatricolazione {
                targa: Targa::parse("AB123CD").unwrap(),
                veicolo: Veicolo {
                    intestatario: cf(CF),
                    tipo: "autovettura".into(),
                    classe_euro: 6,
                    alimentazione: "benzina".into(),
                },
            }],
        })
        .unwrap();
        tira(
            mctc.install(Dispatcher::builder()),
            client,
            store,
            shutdown.clone(),
        );

        // The portal: its four roles, one dispatcher.
        let (client, store) = body(PORTALE);
        let nodo_id: EntityId = NODO.parse().unwrap();
        let p_tributi =
            PortaleTributi::open(client.clone(), store.clone(), nodo_id.clone()).unwrap();
        let p_multe = PortaleMulte::open(client.clone(), store.clone(), nodo_id.clone()).unwrap();
        let p_ztl = PortaleZtl::open(client.clone(), store.clone(), nodo_id.clone()).unwrap();
        let p_edilizia =
            PortaleEdilizia::open(client.clone(), store.clone(), shared.clone(), nodo_id).unwrap();
        let builder = p_edilizia
            .install(p_ztl.install(p_multe.install(p_tributi.install(Dispatcher::builder()))));
        let portale = tira(builder, client, store, shutdown.clone());

        Intorno {
            dir,
            hub,
            clock,
            shared,
            stop,
            shutdown,
            nodo,
            portale,
            p_tributi,
            p_multe,
            p_ztl,
            p_edilizia,
        }
    }

    /// Pays the tax notice `nav` by card through the portal's tax role.
    async fn paga_imu(&self, nav: &snodo_schemas::formats::Nav) {
        let ente = cf(TORINO_CF);
        let v = self.p_tributi.verifica(&ente, nav).await.unwrap();
        let EsitoVerifica::Pagabile(p) = v.esito else {
            panic!("{v:?}")
        };
        let a = self
            .p_tributi
            .attiva(&ente, nav, p.importo, Canale::Carta)
            .await
            .unwrap();
        let EsitoAttivazione::Attivato(x) = a.esito else {
            panic!("{a:?}")
        };
        let e = self
            .p_tributi
            .esito(
                &x.token,
                nav,
                Risultato::Ok,
                Canale::Carta,
                None,
                istante(self.clock.now()),
            )
            .await
            .unwrap();
        assert_eq!(e.stato, EsitoRegistrato::Pagato);
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.hub.shutdown().await.unwrap();
    }
}

impl Federazione {
    async fn new() -> Federazione {
        let e = Intorno::avvia().await;
        // Turin: four creditor offices, one entity, one store, one dispatcher.
        let dir = e.dir.path();
        let (client, store) = (
            client_of(dir, &e.hub, TORINO),
            Store::open(&dir.join("state-comune-001272")).unwrap(),
        );
        let (shared, shutdown) = (e.shared.clone(), e.shutdown.clone());
        let comune = CodiceIstat::parse("001272").unwrap();
        let iban = "IT60X0542811101000000123456";
        let tributi = Ufficio::open(
            client.clone(),
            store.clone(),
            shared.clone(),
            ufficio::Impostazioni {
                comune: comune.clone(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TORINO_CF),
                iban: iban.into(),
                nodo: NODO.parse().unwrap(),
                portale: PORTALE.parse().unwrap(),
                email_ufficio: "tributi@comune.torino.it".into(),
                posta: MailConfig {
                    from: "Ufficio tributi <tributi@comune.torino.it>".into(),
                    smtp: None,
                    directory: Some(dir.join("posta-tributi")),
                },
                aliquote: Vec::new(),
            },
        )
        .unwrap();
        let comando = Comando::open(
            client.clone(),
            store.clone(),
            shared.clone(),
            comando::Impostazioni {
                comune: comune.clone(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TORINO_CF),
                iban: iban.into(),
                nodo: NODO.parse().unwrap(),
                portale: PORTALE.parse().unwrap(),
                prefettura: PREFETTURA.parse().unwrap(),
            },
        )
        .unwrap();
        tokio::spawn(comando.clone().run(shutdown.clone()));
        let ztl = ztl::Ufficio::new(
            Committer::new(client.clone(), store.clone()).unwrap(),
            ztl::Impostazioni {
                comune: comune.clone(),
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TORINO_CF),
                iban: iban.into(),
                nodo: NODO.parse().unwrap(),
                anpr: "anpr:ministero".parse().unwrap(),
                motorizzazione: MCTC.parse().unwrap(),
                settori: vec![Settore {
                    codice: "A".into(),
                    vie: vec!["Via Roma".into()],
                }],
                categorie: vec![RegolaCategoria {
                    categoria: Categoria::Temporaneo,
                    tariffa: euro(10),
                    documenti: Vec::new(),
                    giorni_massimi: Some(30),
                }],
                posta: None,
            },
            shared.clone(),
        )
        .unwrap();
        ztl.start(&shutdown);
        let sportello = Sportello::open(
            client.clone(),
            store.clone(),
            shared.clone(),
            sportello::Impostazioni {
                comune,
                denominazione: "Comune di Torino".into(),
                codice_fiscale: cf(TORINO_CF),
                iban: iban.into(),
                nodo: NODO.parse().unwrap(),
                responsabile: "Arch. Laura Bianchi".into(),
                giorni_integrazione: 30,
                giorni_pagamento: 30,
                tariffe: vec![TariffeAnno {
                    anno: 2026,
                    tariffe: Tariffe {
                        primaria_mc: Importo::centesimi(1_250),
                        secondaria_mc: Importo::centesimi(1_830),
                        quota_costo: PuntiBase::new(500).unwrap(),
                        diritti_permesso: euro(150),
                        diritti_scia: euro(100),
                        diritti_cila: euro(50),
                    },
                }],
            },
        )
        .unwrap();
        tokio::spawn(sportello.clone().run(shutdown.clone()));
        let builder =
            sportello.install(ztl.install(comando.install(tributi.install(Dispatcher::builder()))));
        let torino = tira(builder, client, store, shutdown.clone());

        Federazione {
            torino,
            tributi,
            comando,
            ztl,
            sportello,
            e,
        }
    }

    fn torino() -> EntityId {
        TORINO.parse().unwrap()
    }

    /// Every record of Turin's dispatcher for `pagamenti/action`.
    fn registrati(&self, action: &str) -> Vec<snodo_connectors::dispatch::Processed> {
        self.torino
            .processed_tree()
            .scan("")
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.service == "pagamenti" && r.action == action)
            .collect()
    }

    async fn shutdown(self) {
        self.e.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_offices_of_one_comune_each_close_their_own_notice_and_take_their_part_of_the_flow() {
    let f = Federazione::new().await;

    // The tax office issues the June instalment of Rossi's second home.
    f.tributi
        .registra(&cf(CF), seconda_casa(), Data::parse("2019-05-10").unwrap())
        .await
        .unwrap();
    let avviso = f
        .tributi
        .emetti_avviso(&cf(CF), 2026, Rata::Acconto)
        .await
        .unwrap();
    let nav_imu = avviso.nav.clone().unwrap();
    let iupd_imu = f
        .tributi
        .avvisi()
        .unwrap()
        .into_iter()
        .find(|(_, a)| a.nav.as_ref() == Some(&nav_imu))
        .map(|(k, _)| k)
        .unwrap();

    // The police notify a fine: two notices (reduced and ordinary), to the portal.
    let multa = f
        .comando
        .notifica(verbale("V-1"), Data::parse("2026-03-02").unwrap())
        .await
        .unwrap();
    eventually(20, "the fine at the portal", || async {
        f.p_multe
            .verbali(&cf(CF))
            .unwrap()
            .into_iter()
            .find(|v| v.numero == "V-1")
    })
    .await;

    // The ZTL office takes an application: its fee's notice comes with the receipt.
    let ricevuta_ztl = f
        .p_ztl
        .domanda(&Federazione::torino(), domanda_ztl("Z-1"))
        .await
        .unwrap();
    let nav_ztl = ricevuta_ztl.nav.clone().expect("a fee has its notice");
    let numero_ztl = ricevuta_ztl.protocollo.numero.clone();

    // The building office protocols a CILA and asks the provider for its fees.
    f.p_edilizia
        .presenta(&Federazione::torino(), &cila("CILA-1"))
        .await
        .unwrap();
    let oneri = eventually(20, "the building fees at the portal", || async {
        f.p_edilizia
            .pratica("CILA-1")
            .unwrap()
            .and_then(|p| p.oneri)
    })
    .await;
    assert_eq!(oneri.totale, euro(50));
    let chiave_edilizia = sportello::chiave(&PORTALE.parse().unwrap(), "CILA-1");

    // Four notices of one creditor, four distinct numbers.
    let navs: BTreeSet<String> = [
        nav_imu.as_str(),
        multa
            .avvisi
            .iter()
            .find(|a| a.tipo == TipoAvviso::Ridotto)
            .unwrap()
            .nav
            .as_str(),
        nav_ztl.as_str(),
        oneri.nav.as_str(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(navs.len(), 4, "{navs:?}");

    // Everything is paid on day 1.
    f.clock.set(datetime!(2026-03-03 10:00 UTC));
    f.paga_imu(&nav_imu).await;
    let now = istante(f.clock.now());
    let (pagato, _) = f
        .p_multe
        .paga(
            &Federazione::torino(),
            &CodiceIstat::parse("001272").unwrap(),
            Criterio::Verbale {
                numero: multa.numero.clone(),
                targa: multa.targa.clone(),
                data: Data::from_date(multa.il.datetime().date()).unwrap(),
            },
            Canale::Carta,
            now.clone(),
        )
        .await
        .unwrap();
    assert_eq!(pagato.tipo, TipoAvviso::Ridotto);
    f.p_ztl
        .paga("Z-1", &cf(TORINO_CF), Canale::Carta, now)
        .await
        .unwrap();
    f.p_edilizia.paga("CILA-1", Canale::Carta).await.unwrap();

    // Each office closes its own notice on its receipt.
    eventually(20, "the tax notice closed", || async {
        f.tributi
            .avviso(&iupd_imu)
            .unwrap()
            .filter(|a| a.versamento.is_some())
    })
    .await;
    let fascicolo = eventually(20, "the fine paid", || async {
        f.comando
            .fascicolo("V-1")
            .unwrap()
            .filter(|x| x.verbale.stato == StatoVerbale::PagatoRidotto)
    })
    .await;
    assert_eq!(fascicolo.pagamento.unwrap().tipo, TipoAvviso::Ridotto);
    eventually(20, "the ZTL permit issued on its fee", || async {
        f.ztl
            .pratica(&numero_ztl)
            .unwrap()
            .filter(|p| p.stato == StatoPermesso::Rilasciato)
    })
    .await;
    eventually(20, "the building fees paid", || async {
        f.sportello
            .oneri(&chiave_edilizia)
            .unwrap()
            .filter(|o| o.pagato_il.is_some())
    })
    .await;

    // Four receipts reached one dispatcher; each was taken by exactly one handler, a
    // different one each time; none was rejected, nor was any message of the provider.
    let ricevute = eventually(20, "four receipts recorded", || async {
        let r = f.registrati("ricevuta");
        (r.len() == 4).then_some(r)
    })
    .await;
    let mut presi = BTreeSet::new();
    for r in &ricevute {
        assert_eq!(r.outcome, "done", "{r:?}");
        assert_eq!(r.handlers.len(), 1, "{r:?}");
        presi.insert(r.handlers[0]);
    }
    assert_eq!(
        presi.len(),
        4,
        "each receipt went to its own office: {ricevute:?}"
    );
    let ne_tributi = f.tributi.avvisi().unwrap();
    assert_eq!(ne_tributi.len(), 1, "the tax office saw only its notice");
    for d in [&f.torino, &f.portale] {
        let rifiutati: Vec<_> = d
            .processed_tree()
            .scan("")
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.outcome != "done")
            .collect();
        assert!(rifiutati.is_empty(), "{rifiutati:?}");
    }

    // The provider's settlement flow lists all four payments: one envelope, each office
    // takes its own part of it, once.
    let flow = f
        .nodo
        .rendiconta(&Federazione::torino(), Data::parse("2026-03-04").unwrap())
        .await
        .unwrap()
        .expect("four payments to report");
    assert_eq!(flow.pagamenti.len(), 4);
    eventually(20, "the flow taken by all four offices", || async {
        let r = f.registrati("rendicontazione");
        r.into_iter().find(|r| r.handlers.len() == 4)
    })
    .await;
    assert!(f.tributi.avviso(&iupd_imu).unwrap().unwrap().rendicontato);
    let ridotto = &fascicolo
        .verbale
        .avvisi
        .iter()
        .find(|a| a.tipo == TipoAvviso::Ridotto)
        .unwrap()
        .nav;
    assert_eq!(
        f.comando.rendicontato(ridotto).unwrap().as_deref(),
        Some(flow.id_flusso.as_str())
    );
    assert_eq!(
        f.ztl.rendicontato(&nav_ztl).unwrap().as_deref(),
        Some(flow.id_flusso.as_str())
    );
    assert_eq!(
        f.sportello.rendicontato(&oneri.nav).unwrap().as_deref(),
        Some(flow.id_flusso.as_str())
    );
    let ordinario = &fascicolo
        .verbale
        .avvisi
        .iter()
        .find(|a| a.tipo == TipoAvviso::Ordinario)
        .unwrap()
        .nav;
    assert_eq!(
        f.comando.rendicontato(ordinario).unwrap(),
        None,
        "never paid"
    );

    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snodo_connector_runs_the_four_offices_from_one_configuration() {
    let e = Intorno::avvia().await;
    // The connector runs on the system clock: the provider's clock follows it here.
    let now = time::OffsetDateTime::now_utc();
    e.clock.set(now);
    // The example, pointed at this hub; its pki/, state and mail are relative to the file.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/uffici/comune-001272.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("https://localhost:8443", &url(&e.hub));
    let path = e.dir.path().join("comune-001272.toml");
    std::fs::write(&path, text).unwrap();
    let config = snodo_connectors::config::Config::load(&path).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let (started, up) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        snodo_connectors::connector::run(config, shutdown, Some(started))
            .await
            .unwrap();
    });
    up.await.unwrap();
    let torino = Federazione::torino();
    let comune = CodiceIstat::parse("001272").unwrap();

    // Each office answers its own service from the one process.
    let esito = e
        .p_tributi
        .al_comune::<CalcoloRichiesta, CalcoloEsito>(
            &torino,
            &CalcoloRichiesta {
                pratica: "CALC-1".into(),
                contribuente: cf(CF),
                comune: comune.clone(),
                anno: 2026,
                immobili: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(esito.pratica, "CALC-1");
    let oggi = Data::from_date(now.date()).unwrap();
    let trovati = e
        .p_multe
        .cerca(
            &torino,
            &comune,
            Criterio::Verbale {
                numero: "V-9".into(),
                targa: Targa::parse("AB123CD").unwrap(),
                data: oggi,
            },
        )
        .await
        .unwrap();
    assert!(trovati.is_empty());

    // The ZTL office and the building office each ask the provider for a position, take
    // their own `posizione-creata`, and close on their own receipt.
    let mut domanda = domanda_ztl("Z-1");
    domanda.settori = serde_json::from_value(json!(["centro"])).unwrap();
    domanda.periodo = serde_json::from_value(json!({
        "dal": oggi.as_str(),
        "al": Data::from_date(now.date() + time::Duration::days(10)).unwrap().as_str(),
    }))
    .unwrap();
    let ricevuta = e.p_ztl.domanda(&torino, domanda).await.unwrap();
    assert_eq!(ricevuta.tariffa, Importo::centesimi(1000));
    assert!(ricevuta.nav.is_some(), "{ricevuta:?}");
    e.p_edilizia
        .presenta(&torino, &cila("CILA-1"))
        .await
        .unwrap();
    eventually(20, "the building fees at the portal", || async {
        e.p_edilizia
            .pratica("CILA-1")
            .unwrap()
            .and_then(|p| p.oneri)
    })
    .await;
    e.p_ztl
        .paga("Z-1", &cf(TORINO_CF), Canale::Carta, istante(now))
        .await
        .unwrap();
    e.p_edilizia.paga("CILA-1", Canale::Carta).await.unwrap();
    eventually(20, "the ZTL permit issued on its fee", || async {
        e.p_ztl
            .vista("Z-1")
            .unwrap()
            .filter(|v| v.stato == StatoPermesso::Rilasciato)
    })
    .await;
    eventually(
        20,
        "the building office's note of the fees paid",
        || async {
            e.p_edilizia.pratica("CILA-1").unwrap().filter(|p| {
                p.stati.iter().any(|s| {
                    s.nota
                        .as_deref()
                        .is_some_and(|n| n.contains("Oneri versati"))
                })
            })
        },
    )
    .await;

    let _ = stop.send(true);
    task.await.unwrap();
    e.shutdown().await;
}
