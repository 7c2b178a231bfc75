//! The reference for the amqp transport's benchmark: RabbitMQ alone, through lapin and nothing
//! else — persistent messages of a given size published with confirms into one quorum queue,
//! with as many publications in flight as the load generator has clients. Prints the rate and
//! writes it as JSON with `--json`.

use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

#[derive(Debug, Parser)]
struct Args {
    /// RabbitMQ.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Bytes per message (the signed envelope's size, for a like-for-like reference).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Publications awaiting their confirm at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Publish as the hub does: through a durable topic exchange bound to the queue by a
    /// pattern, with the hub's properties and a header of `--header-bytes` (the envelope's
    /// record), instead of straight to the queue with no header.
    #[arg(long)]
    like_hub: bool,
    /// Only the route of `--like-hub`: the topic exchange, with plain properties.
    #[arg(long, conflicts_with = "like_hub")]
    topic_only: bool,
    /// Only the properties of `--like-hub`: straight to the queue, with the hub's properties.
    #[arg(long, conflicts_with_all = ["like_hub", "topic_only"])]
    properties_only: bool,
    /// With `--like-hub` or `--topic-only`, the queue's binding to the topic exchange (the hub
    /// binds `<entity>.#`); it must match the key `anpr:ministero.servizio.azione`.
    #[arg(long, default_value = "anpr:ministero.#")]
    binding: String,
    /// Bytes of the record header with `--like-hub` or `--properties-only` (a 1 KiB JSON
    /// envelope's record is about 560).
    #[arg(long, default_value_t = 560)]
    header_bytes: usize,
    /// Declare the queue as the hub declares an entity's inbox: expired messages dead-lettered
    /// at least once to an exchange of their own (which needs `reject-publish` overflow).
    #[arg(long)]
    dead_letter: bool,
    /// Give each message a TTL of this many milliseconds, as the hub does for an envelope
    /// with an expiry.
    #[arg(long)]
    expiration_ms: Option<u64>,
    /// Write the result as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.messages == 0 || args.in_flight == 0 {
        bail!("--messages and --in-flight must be at least 1");
    }
    let conn = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("snodo-raw-{}", std::process::id());
    let mut q_args = FieldTable::default();
    q_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let dlx = format!("{queue}.dlx");
    if args.dead_letter {
        declare_exchange(&ch, &dlx, lapin::ExchangeKind::Fanout).await?;
        for (k, v) in [
            ("x-dead-letter-exchange", dlx.as_str()),
            ("x-dead-letter-strategy", "at-least-once"),
            ("x-overflow", "reject-publish"),
        ] {
            q_args.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
    }
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::durable(),
        q_args,
    )
    .await?;
    let payload = vec![b'x'; args.size];
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(ms) = args.expiration_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    let topic = args.like_hub || args.topic_only;
    let hub_properties = args.like_hub || args.properties_only;
    if hub_properties {
        let mut headers = FieldTable::default();
        headers.insert(
            "snodo-record".into(),
            AMQPValue::LongString(LongString::from(vec![b'r'; args.header_bytes])),
        );
        headers.insert("snodo-origin".into(), AMQPValue::LongString("hub".into()));
        props = props
            .with_content_type("application/jose+json".into())
            .with_message_id(uuid::Uuid::now_v7().to_string().into())
            .with_headers(headers);
    }
    let (exchange, key) = if topic {
        let exchange = format!("{queue}.x");
        declare_exchange(&ch, &exchange, lapin::ExchangeKind::Topic).await?;
        ch.queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            args.binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        (exchange, "anpr:ministero.servizio.azione".to_owned())
    } else {
        (String::new(), queue.clone())
    };
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    let mut confirmed = 0;
    while confirmed < args.messages {
        while sent < args.messages && pending.len() < args.in_flight {
            let confirm = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &payload,
                    props.clone(),
                )
                .await?;
            pending.push(confirm);
            sent += 1;
        }
        match pending.next().await {
            Some(Ok(Confirmation::Ack(None))) => confirmed += 1,
            Some(Ok(other)) => bail!("not confirmed: {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = confirmed as f64 / secs;
    println!(
        "raw RabbitMQ: {confirmed} persistent {}-byte messages, confirms, one quorum queue, {} in flight{}: {rate:.0}/s ({secs:.2} s)",
        args.size,
        args.in_flight,
        match (topic, hub_properties) {
            (true, true) => ", as the hub publishes",
            (true, false) => ", through the hub's topic exchange",
            (false, true) => ", with the hub's properties",
            (false, false) => "",
        }
    );
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    if topic {
        ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    if args.dead_letter {
        ch.exchange_delete(dlx.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    if let Some(path) = &args.json {
        let summary = serde_json::json!({
            "messages": confirmed, "size": args.size, "in_flight": args.in_flight,
            "seconds": secs, "rate": rate, "topic": topic, "hub_properties": hub_properties,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(())
}

/// Declares a durable exchange of `kind` named `name`.
async fn declare_exchange(
    ch: &lapin::Channel,
    name: &str,
    kind: lapin::ExchangeKind,
) -> lapin::Result<()> {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
}
