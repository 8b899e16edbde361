//! `billhook bench`: end-to-end throughput and latency of after-stage delivery, next to
//! the ceiling of the same machine (the same receiver driven directly by the same client
//! with the same payload).
//!
//! It starts this binary as a server on a fresh database, a minimal receiver on
//! loopback, registers one after handler, sends N payments from C concurrent clients
//! through the Core API and times each event from the API call to its receipt.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::post;
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::bench_recovering::Recovering;

const KEY: &str = "bench-key";

/// Options of `billhook bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events to send.
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Database: `sqlite` (a fresh temporary file) or a PostgreSQL URL of a server where
    /// a fresh database is created and dropped.
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Send at this many events per second instead of as fast as possible (to measure
    /// latency below saturation).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct clients the events are spread over (the unit of ordering).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Repeat the whole measurement (ceiling, delivery on a fresh database, ceiling again)
    /// this many times and print the medians: this machine's noise is large.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Also register a second after handler for the same events whose endpoint is down
    /// (connections refused, next attempt in an hour): its deliveries pile up behind
    /// each client's first one while the first handler's are measured.
    #[arg(long, conflicts_with = "recovering_handler")]
    down_handler: bool,
    /// Also register a second after handler for the same events whose endpoint answers
    /// 503 for this many seconds once the events start, then 200, retried every second:
    /// when it comes back, every client's queue for it falls due at once. Prints how long
    /// the engine takes to deliver what piled up.
    #[arg(long, value_name = "SECS")]
    recovering_handler: Option<f64>,
    /// Also measure a relay that only passes each request on to the receiver (the
    /// two HTTP legs of an event, nothing stored): the bound of this design here.
    #[arg(long)]
    relay: bool,
    /// Instead of delivery: Core API latency of one action with 0, 1 and 3 before
    /// handlers on a loopback receiver that answers at once (sequential requests).
    #[arg(long)]
    before: bool,
}

type Receipts = Arc<Mutex<HashMap<i64, Instant>>>;

/// What the receiver reads of a payload, and the bench of an API answer: typed, so that
/// the rest of the JSON is skipped rather than built into values (the bench shares the
/// machine with the server it measures).
#[derive(serde::Deserialize)]
struct Hook {
    event: HookEvent,
}

#[derive(serde::Deserialize)]
struct HookEvent {
    object_id: Option<i64>,
}

#[derive(serde::Deserialize)]
struct Created {
    id: i64,
}

/// Starts the receiver; its receipts have room for `events` without growing (a map
/// that doubles now and then, faulting in fresh pages, takes CPU from the server under
/// test).
async fn start_receiver(events: usize) -> anyhow::Result<(String, Receipts, Arc<Recovering>)> {
    let receipts: Receipts = Arc::new(Mutex::new(HashMap::with_capacity(events)));
    let recovering = Arc::new(Recovering::default());
    let app = Router::new()
        .route(
            "/hook",
            post(|State(r): State<Receipts>, body: Bytes| async move {
                let at = Instant::now();
                if let Ok(Hook {
                    event:
                        HookEvent {
                            object_id: Some(id),
                        },
                }) = serde_json::from_slice(&body)
                {
                    r.lock().expect("not poisoned").entry(id).or_insert(at);
                }
                ""
            }),
        )
        .route("/before", post(|| async { "" }))
        .route(
            "/recovering",
            post({
                let r = recovering.clone();
                move || async move { r.answer() }
            }),
        )
        .with_state(receipts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), receipts, recovering))
}

struct Child {
    process: tokio::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start_server(database_url: &str) -> anyhow::Result<Child> {
    let dir = tempfile::tempdir()?;
    let url = if database_url == "sqlite" {
        format!("sqlite:{}", dir.path().join("bench.db").display())
    } else {
        database_url.to_string()
    };
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--log",
            "warn",
        ])
        .current_dir(dir.path())
        .env("BILLHOOK_API_KEY", KEY);
    let (process, base) = spawn_listening(command, "billhook listening on ")
        .await
        .context("starting the server")?;
    Ok(Child {
        process,
        base,
        _dir: dir,
    })
}

/// Starts `command` (this binary) and waits for the line of its standard output that
/// starts with `listening`; returns the process and the rest of that line (its address).
/// The rest of its output is read and dropped.
pub(crate) async fn spawn_listening(
    mut command: tokio::process::Command,
    listening: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    // The child dies with the bench even when the bench is killed (SIGKILL, or a SIGTERM
    // sent to it alone): a server left running goes on polling its database and skews
    // the runs after it. The signal comes when the thread that spawned the child ends:
    // here the main thread (the bench runs in `block_on`), which ends with the process.
    #[cfg(target_os = "linux")]
    {
        let bench = libc::pid_t::try_from(std::process::id())?;
        // SAFETY: `prctl`, `getppid` and `_exit` are async-signal-safe and touch nothing
        // of the parent's.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The bench died before the line above: no signal will come.
                if libc::getppid() != bench {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let mut process = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(process.stdout.take().context("stdout")?).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await?
            .context("exited before listening")?;
        if let Some(addr) = line.strip_prefix(listening) {
            break addr.to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((process, addr))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs `n` requests from `concurrency` tasks, optionally paced at `rate` per second;
/// `send(i)` makes request i and returns whether it was acknowledged.
async fn drive<F, Fut>(n: usize, concurrency: usize, rate: Option<f64>, send: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, send) = (next.clone(), send.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    if let Some(rate) = rate {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    send(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    started.elapsed()
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.before {
        return before_latency(args).await;
    }
    println!(
        "billhook bench: {} events, {} concurrent clients, {} ({})",
        args.events,
        args.concurrency,
        if args.database == "sqlite" {
            "SQLite"
        } else {
            "PostgreSQL"
        },
        args.rate
            .map_or("as fast as possible".to_string(), |r| format!(
                "paced at {r}/s"
            ))
    );
    if args.down_handler {
        println!("  with a second handler whose endpoint is down: its deliveries pile up");
    }
    let runs = args.runs.max(1);
    let mut all = Vec::with_capacity(runs);
    for n in 1..=runs {
        let figures = delivery_run(&args).await?;
        if runs > 1 {
            println!("run {n}/{runs}:");
        }
        figures.print();
        all.push(figures);
    }
    if runs > 1 {
        println!("median of {runs} runs:");
        Figures::median(&all).print();
    }
    if let Some(f) = all.iter().find(|f| f.delivered < f.acked) {
        bail!(
            "{} acknowledged events were not delivered within the deadline",
            f.acked - f.delivered
        );
    }
    Ok(())
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Requests per second of the receiver driven directly: the mean of a measurement
    /// just before the run and one just after.
    ceiling: f64,
    /// Deliveries per second as a share of that run's ceiling.
    share: f64,
    acked: usize,
    delivered: usize,
    acked_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time per event while events were sent and delivered, in µs: the server's,
    /// and the bench's own (its API client and receiver).
    server_cpu_us: f64,
    bench_cpu_us: f64,
    /// The bench's CPU time per request of the ceiling (client and receiver), in µs.
    ceiling_cpu_us: f64,
    /// With `--relay`: requests per second through the relay, and its CPU time per
    /// request in µs (NaN without).
    relay: f64,
    relay_cpu_us: f64,
    /// SQLite: the share of the time its one writer was in use, and the write
    /// transactions per group commit (NaN on PostgreSQL).
    writer_busy: f64,
    per_commit: f64,
    /// With `--recovering-handler`: its deliveries made, and how long after its endpoint
    /// came back the last one arrived, in s (NaN without).
    recovered: usize,
    drain_s: f64,
}

impl Figures {
    fn print(&self) {
        println!(
            "  ceiling (receiver driven directly):   {:>9.0} requests/s",
            self.ceiling
        );
        if !self.relay.is_nan() {
            println!(
                "  relay (two HTTP legs, nothing stored): {:>8.0} requests/s ({:.0} % of ceiling), \
                 relay CPU {:.0} µs per request",
                self.relay,
                100.0 * self.relay / self.ceiling,
                self.relay_cpu_us
            );
        }
        println!(
            "  events acknowledged by the API:       {:>9.0} events/s ({} acknowledged)",
            self.acked_per_s, self.acked
        );
        println!(
            "  deliveries:                           {:>9.0} deliveries/s ({} delivered, {:.1} % of ceiling)",
            self.delivered_per_s,
            self.delivered,
            100.0 * self.share
        );
        println!(
            "  end-to-end latency (API call to receipt): p50 {:.1} ms, p99 {:.1} ms",
            self.p50_ms, self.p99_ms
        );
        println!(
            "  CPU per event: server {:.0} µs, bench {:.0} µs (API client and receiver); \
             a ceiling request costs the bench {:.0} µs",
            self.server_cpu_us, self.bench_cpu_us, self.ceiling_cpu_us
        );
        if !self.writer_busy.is_nan() {
            println!(
                "  SQLite writer: in use {:.0} % of the time, {:.1} write transactions per commit",
                100.0 * self.writer_busy,
                self.per_commit
            );
        }
        if !self.drain_s.is_nan() {
            println!(
                "  recovering handler: {} deliveries, the last {:.2} s after its endpoint came back",
                self.recovered, self.drain_s
            );
        }
    }

    /// Each figure's median over the runs (counts: the smallest).
    fn median(runs: &[Figures]) -> Figures {
        let m = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            percentile(&v, 0.5)
        };
        Figures {
            ceiling: m(|f| f.ceiling),
            // Each run's own share, not the medians' quotient: a run's deliveries are
            // measured against the ceiling of the same moment.
            share: m(|f| f.share),
            acked: runs.iter().map(|f| f.acked).min().unwrap_or(0),
            delivered: runs.iter().map(|f| f.delivered).min().unwrap_or(0),
            acked_per_s: m(|f| f.acked_per_s),
            delivered_per_s: m(|f| f.delivered_per_s),
            p50_ms: m(|f| f.p50_ms),
            p99_ms: m(|f| f.p99_ms),
            server_cpu_us: m(|f| f.server_cpu_us),
            bench_cpu_us: m(|f| f.bench_cpu_us),
            ceiling_cpu_us: m(|f| f.ceiling_cpu_us),
            relay: m(|f| f.relay),
            relay_cpu_us: m(|f| f.relay_cpu_us),
            recovered: runs.iter().map(|f| f.recovered).min().unwrap_or(0),
            drain_s: m(|f| f.drain_s),
            writer_busy: m(|f| f.writer_busy),
            per_commit: m(|f| f.per_commit),
        }
    }
}

/// CPU time (user and system) a process has used so far: `None` for this process.
/// Read from `/proc`, whose times are in ticks of 1/100 s on Linux.
fn cpu_time(pid: Option<u32>) -> Duration {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let ticks = std::fs::read_to_string(path).ok().and_then(|stat| {
        // The fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 12th and 13th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split(' ').skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some(user + system)
    });
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

/// Microseconds of `cpu` per item.
fn per_item(cpu: Duration, items: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / items.max(1) as f64
}

/// The ceiling's request: what billhook sends the receiver for a payment (its headers,
/// a payload of its shape and size), so that the receiver does for each what it does
/// for a delivery. Its object id, 0, is no payment's.
fn ceiling_request() -> anyhow::Result<(HeaderMap, Vec<u8>)> {
    let sample = json!({"event": {"dt": "2026-11-22T10:15:30.123456Z", "events_id": "accounting.payments.create",
        "object_id": 0, "uid": "01935a1e-0000-7000-8000-000000000000", "stage": "after"},
        "data": {"id": 1, "clients_id": 1, "amount": "1", "dt": "2026-11-22T10:15:30.123456Z", "notes": null,
        "created_at": "2026-11-22T10:15:30.123456Z", "updated_at": "2026-11-22T10:15:30.123456Z"}, "previous": {}});
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        (
            "user-agent",
            concat!("billhook/", env!("CARGO_PKG_VERSION")),
        ),
        ("webhook-id", "01935a1e-0000-7000-8000-000000000000"),
        ("webhook-timestamp", "1795342530"),
        (
            "webhook-signature",
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok((headers, serde_json::to_vec(&sample)?))
}

/// [`post_all`] measured: requests per second, and the CPU time per request in µs of
/// process `pid` (`None`: this one).
async fn posted_rate(
    http: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    args: &BenchArgs,
    pid: Option<u32>,
) -> anyhow::Result<(f64, f64)> {
    let cpu_before = cpu_time(pid);
    let took = post_all(http, url, headers, body, args).await?;
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    Ok((
        args.events as f64 / took.as_secs_f64(),
        per_item(cpu, args.events),
    ))
}

/// Posts `body` with `headers` to `url` `args.events` times from `args.concurrency`
/// tasks, as fast as possible; returns how long it took. A request that fails fails the
/// measurement.
async fn post_all(
    http: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
    args: &BenchArgs,
) -> anyhow::Result<Duration> {
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (http, target, body) = (http.clone(), url.to_string(), Bytes::copy_from_slice(body));
    let headers = headers.clone();
    let counter = failed.clone();
    let took = drive(args.events, args.concurrency, None, move |_| {
        let (http, url, headers, body, failed) = (
            http.clone(),
            target.clone(),
            headers.clone(),
            body.clone(),
            counter.clone(),
        );
        async move {
            let ok = http
                .post(&url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ok {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    match failed.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Ok(took),
        n => bail!("{n} of {} requests to {url} failed", args.events),
    }
}

/// One measurement: the ceiling, delivery through a server on a fresh database, and the
/// ceiling again.
async fn delivery_run(args: &BenchArgs) -> anyhow::Result<Figures> {
    let (receiver, receipts, recovering) = start_receiver(args.events).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .tcp_nodelay(true)
        .build()?;

    // The ceiling: the receiver's own route, driven directly with a delivery's request.
    let (ceiling_headers, body) = ceiling_request()?;
    let ceiling_url = format!("{receiver}/hook");
    let measure_ceiling = || posted_rate(&http, &ceiling_url, &ceiling_headers, &body, args, None);
    let ceiling_before = measure_ceiling().await?;

    let (relay, relay_cpu_us) = if args.relay {
        let relay = crate::bench_relay::Relay::start(&ceiling_url).await?;
        let pid = relay.process.id();
        posted_rate(&http, &relay.url, &ceiling_headers, &body, args, pid).await?
    } else {
        (f64::NAN, f64::NAN)
    };
    // What the ceiling's requests left (object id 0, no payment's) is not a delivery.
    receipts.lock().expect("not poisoned").clear();

    // The server under test.
    let (database_url, dropper) = fresh_database(&args.database).await?;
    let mut server = start_server(&database_url).await?;
    let api = format!("{}/api/v1", server.base);
    let post = |path: &str, body: Value| {
        http.post(format!("{api}{path}"))
            .header("X-Api-Key", KEY)
            .json(&body)
            .send()
    };
    let r = post(
        "/handlers",
        json!({"name": "bench", "event": "accounting.payments.create", "task": format!("{receiver}/hook")}),
    )
    .await?;
    if !r.status().is_success() {
        bail!("creating the handler: {}", r.text().await?);
    }
    if args.down_handler {
        // Nothing listens on port 1: every call is refused at once, and each client's
        // queue for this handler waits an hour behind its first event.
        let r = post(
            "/handlers",
            json!({"name": "down", "event": "accounting.payments.create",
                   "task": "http://127.0.0.1:1/down", "retry_schedule": [3600]}),
        )
        .await?;
        if !r.status().is_success() {
            bail!("creating the handler that is down: {}", r.text().await?);
        }
    }
    if args.recovering_handler.is_some() {
        let r = post(
            "/handlers",
            Recovering::handler(&format!("{receiver}/recovering")),
        )
        .await?;
        if !r.status().is_success() {
            bail!("creating the recovering handler: {}", r.text().await?);
        }
    }
    let mut clients = Vec::new();
    for n in 0..args.clients.max(1) {
        let v: Value = post("/clients", json!({"name": format!("bench {n}")}))
            .await?
            .json()
            .await?;
        clients.push(v["id"].as_i64().context("client id")?);
    }

    let server_pid = server.process.id();
    let (server_cpu_before, bench_cpu_before) = (cpu_time(server_pid), cpu_time(None));
    let metrics_url = format!("{}/metrics", server.base);
    let writer_before = writer_use(&http, &metrics_url).await;
    let sent = Arc::new(Mutex::new(HashMap::<i64, Instant>::with_capacity(
        args.events,
    )));
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    if let Some(secs) = args.recovering_handler {
        recovering.back_after(Duration::from_secs_f64(secs));
    }
    let api_time = {
        let (http, sent, acked, clients) =
            (http.clone(), sent.clone(), acked.clone(), Arc::new(clients));
        let url = format!("{api}/payments");
        drive(args.events, args.concurrency, args.rate, move |i| {
            let (http, sent, acked, clients, url) = (
                http.clone(),
                sent.clone(),
                acked.clone(),
                clients.clone(),
                url.clone(),
            );
            async move {
                let at = Instant::now();
                let body = json!({"clients_id": clients[i % clients.len()], "amount": "1"});
                let Ok(r) = http
                    .post(&url)
                    .header("X-Api-Key", KEY)
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                if r.status().as_u16() != 201 {
                    return;
                }
                if let Ok(Created { id }) = r.json().await {
                    sent.lock().expect("not poisoned").insert(id, at);
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
        .await
    };
    let acked = acked.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = receipts.lock().expect("not poisoned").len();
        if got >= acked || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = sent.lock().expect("not poisoned").clone();
    let receipts = receipts.lock().expect("not poisoned").clone();
    let last = receipts.values().max().copied().unwrap_or(started);
    let delivery_time = last.duration_since(started);
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            receipts
                .get(id)
                .map(|r| r.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let server_cpu = cpu_time(server_pid).saturating_sub(server_cpu_before);
    let bench_cpu = cpu_time(None).saturating_sub(bench_cpu_before);
    let writer_after = writer_use(&http, &metrics_url).await;
    let measured = started.elapsed();
    let (recovered, drain) = match args.recovering_handler {
        Some(_) => recovering.drained(acked).await,
        None => (0, None),
    };
    let writer = writer_before.zip(writer_after).map(|(a, b)| WriterUse {
        busy_s: b.busy_s - a.busy_s,
        commits: b.commits - a.commits,
        transactions: b.transactions - a.transactions,
    });

    let _ = server.process.start_kill();
    let _ = server.process.wait().await;
    if let Some(drop) = dropper {
        drop.await;
    }
    // Measured again once the server is gone: the machine's speed drifts by the second
    // here, and the mean of the ceilings on either side of the run is the one it met.
    let ceiling_after = measure_ceiling().await?;
    let (ceiling, ceiling_cpu_us) = (
        (ceiling_before.0 + ceiling_after.0) / 2.0,
        (ceiling_before.1 + ceiling_after.1) / 2.0,
    );
    let delivered_per_s = receipts.len() as f64 / delivery_time.as_secs_f64();

    Ok(Figures {
        ceiling,
        share: delivered_per_s / ceiling,
        acked,
        delivered: receipts.len(),
        acked_per_s: acked as f64 / api_time.as_secs_f64(),
        delivered_per_s,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        server_cpu_us: per_item(server_cpu, receipts.len()),
        bench_cpu_us: per_item(bench_cpu, receipts.len()),
        ceiling_cpu_us,
        relay,
        relay_cpu_us,
        writer_busy: writer.map_or(f64::NAN, |w| w.busy_s / measured.as_secs_f64()),
        per_commit: writer.map_or(f64::NAN, |w| w.transactions / w.commits.max(1.0)),
        recovered,
        drain_s: drain.map_or(f64::NAN, |d| d.as_secs_f64()),
    })
}

/// The server's SQLite writer counters, from `/metrics`.
#[derive(Debug, Clone, Copy)]
struct WriterUse {
    busy_s: f64,
    commits: f64,
    transactions: f64,
}

/// Reads [`WriterUse`] off the server's `/metrics`; none on PostgreSQL.
async fn writer_use(http: &reqwest::Client, url: &str) -> Option<WriterUse> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    Some(WriterUse {
        busy_s: value("billhook_sqlite_writer_busy_seconds_total")?,
        commits: value("billhook_sqlite_commits_total")?,
        transactions: value("billhook_sqlite_committed_transactions_total")?,
    })
}

/// A fresh database for one run; for PostgreSQL, created on the given server and dropped
/// afterwards by the returned future.
async fn fresh_database(
    spec: &str,
) -> anyhow::Result<(
    String,
    Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
)> {
    if spec == "sqlite" {
        return Ok(("sqlite".into(), None));
    }
    if !spec.starts_with("postgres") {
        bail!("--database must be sqlite or a postgres:// URL");
    }
    let name = format!("billhook_bench_{}", std::process::id());
    let admin = billhook_store::Db::connect(spec).await?;
    billhook_store::Db::execute_admin(&admin, &format!("CREATE DATABASE {name}")).await?;
    let base = spec.rsplit_once('/').map_or(spec, |(b, _)| b).to_string();
    let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let dropper = Box::pin(async move {
        let _ = billhook_store::Db::execute_admin(&admin, &drop_sql).await;
        admin.close().await;
    });
    Ok((format!("{base}/{name}"), Some(dropper as _)))
}

/// Latency of `POST /payments` with 0, 1 and 3 before handlers, one request at a time.
async fn before_latency(args: BenchArgs) -> anyhow::Result<()> {
    let (receiver, _, _) = start_receiver(0).await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let n = args.events.min(2000);
    println!(
        "billhook bench --before: {n} sequential payments per run, {}",
        if args.database == "sqlite" {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );
    let mut base_p50 = None;
    for handlers in [0usize, 1, 3] {
        let (database_url, dropper) = fresh_database(&args.database).await?;
        let mut server = start_server(&database_url).await?;
        let api = format!("{}/api/v1", server.base);
        let post = |path: String, body: Value| {
            http.post(format!("{api}{path}"))
                .header("X-Api-Key", KEY)
                .json(&body)
                .send()
        };
        for i in 0..handlers {
            let r = post(
                "/handlers".into(),
                json!({"name": format!("before {i}"), "event": "accounting.payments.create",
                       "stage": "before", "task": format!("{receiver}/before")}),
            )
            .await?;
            if !r.status().is_success() {
                bail!("creating a before handler: {}", r.text().await?);
            }
        }
        let client: Value = post("/clients".into(), json!({"name": "bench"}))
            .await?
            .json()
            .await?;
        let clients_id = client["id"].as_i64().context("client id")?;
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let at = Instant::now();
            let r = post(
                "/payments".into(),
                json!({"clients_id": clients_id, "amount": "1"}),
            )
            .await?;
            if r.status().as_u16() != 201 {
                bail!("payment refused: {}", r.text().await?);
            }
            // The first requests warm connections and caches.
            if i >= 50 {
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
            }
        }
        latencies.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let extra = match (base_p50, handlers) {
            (Some(b), h) if h > 0 => format!(", {:.3} ms per handler at p50", (p50 - b) / h as f64),
            _ => String::new(),
        };
        println!("  {handlers} before handlers: p50 {p50:.3} ms, p99 {p99:.3} ms{extra}");
        if handlers == 0 {
            base_p50 = Some(p50);
        }
        let _ = server.process.start_kill();
        let _ = server.process.wait().await;
        if let Some(drop) = dropper {
            drop.await;
        }
    }
    Ok(())
}
