//! Turns the JSON result lines written by `bench/run.sh` (`results.raw`)
//! into the markdown report (`results.md`): medians over the repeated runs,
//! side by side with their ceilings, and the two ratios.
//!
//! Every `## ` section of the previous report that this one does not write
//! itself (hand-written ones, `bench/soak.sh`'s "Soak") is carried over
//! verbatim after the generated ones, in its original order.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use serde_json::Value;
use tollgate_bench::markdown::{kept_titles, merge_kept_sections};

#[derive(Parser)]
#[command(about = "Markdown report from bench/run.sh's JSON result lines")]
struct Args {
    #[arg(long)]
    raw: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "")]
    date: String,
    #[arg(long, default_value = "")]
    uname: String,
    #[arg(long, default_value = "")]
    cpu: String,
    #[arg(long, default_value = "")]
    commit: String,
    #[arg(long, default_value = "")]
    users: String,
    #[arg(long, default_value = "")]
    runs: String,
    /// The subject counts of the scaling table (`BENCH_SCALES`).
    #[arg(long, default_value = "")]
    scales: String,
    /// The whole run's wall time, release build included (e.g. "812 s").
    #[arg(long, default_value = "")]
    wall_time: String,
    /// How run.sh was run (e.g. "full", "quick (BENCH_QUICK=1)").
    #[arg(long, default_value = "")]
    mode: String,
    /// Extra free-form lines for the header (repeatable).
    #[arg(long)]
    note: Vec<String>,
    /// The previous report, whose sections this one does not generate are
    /// carried over (default: `--out` as it was before this run).
    #[arg(long)]
    keep_from: Option<PathBuf>,
    /// Write only this section (`feature`), headed by the run's date,
    /// commit and machine, for `BENCH_ONLY=feature bench/run.sh`.
    #[arg(long)]
    section: Option<String>,
}

struct Rows(Vec<Value>);

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    Some(if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Rows {
    /// Rows whose tags match every `(key, value)` in `filter`.
    fn select(&self, filter: &[(&str, &str)]) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|r| {
                filter.iter().all(|(k, v)| match &r[*k] {
                    Value::String(s) => s == v,
                    Value::Number(n) => n.to_string() == *v,
                    _ => false,
                })
            })
            .collect()
    }

    fn median(&self, filter: &[(&str, &str)], field: &str) -> Option<f64> {
        median(
            self.select(filter)
                .iter()
                .filter_map(|r| r[field].as_f64())
                .collect(),
        )
    }

    /// The median over runs of `field` in `a` divided by `field` in `b`
    /// from the same run: paired runs ran back to back, so this cancels
    /// much of the machine's drift.
    fn paired_ratio(&self, a: &[(&str, &str)], b: &[(&str, &str)], field: &str) -> Option<f64> {
        let bs = self.select(b);
        median(
            self.select(a)
                .iter()
                .filter_map(|x| {
                    let y = bs.iter().find(|y| y["run"] == x["run"])?;
                    let (xv, yv) = (x[field].as_f64()?, y[field].as_f64()?);
                    (yv > 0.0).then_some(xv / yv)
                })
                .collect(),
        )
    }

    fn count(&self, filter: &[(&str, &str)]) -> usize {
        self.select(filter).len()
    }

    fn backends(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for r in &self.0 {
            if let Some(b) = r["backend"].as_str() {
                if !seen.iter().any(|s: &String| s == b) {
                    seen.push(b.to_owned());
                }
            }
        }
        seen
    }

    fn labels(&self, section: &str, key: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for r in self.select(&[("section", section)]) {
            let l = match &r[key] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            if !seen.contains(&l) {
                seen.push(l);
            }
        }
        seen
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(x) if x >= 1000.0 => {
            let n = x.round() as u64;
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// A count (pages, runs): a whole number, however small.
fn count(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 1000.0 => format!("{x:.0}"),
        other => num(other),
    }
}

/// Milliseconds to the microsecond: one cached call takes tens of them.
fn ms3(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.3}"))
}

fn ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("**{:.0}%**", r * 100.0),
        None => "–".to_owned(),
    }
}

/// A ratio as a factor, for ratios that are costs (`**1.95x**`).
fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("**{r:.2}x**"))
}

/// HasAccess with a feature against plain HasAccess, same cached user,
/// alternated (issue 13's figure).
fn feature_section(w: &mut String, rows: &Rows, args: &Args, notes: &[String]) -> std::fmt::Result {
    if rows.count(&[("section", "feature")]) == 0 {
        return Ok(());
    }
    writeln!(
        w,
        "\n## HasAccess with a feature vs plain (h2load, one cached user)\n"
    )?;
    writeln!(
        w,
        "`HasAccess(user_id=user_0, feature=bench_feature)` against `HasAccess(user_id=user_0)` \
         on the same server and cached user, end to end over gRPC, alternated (the order flips \
         every run). `user_0`'s subscription has one item whose product's feature map (a \
         `product_features` row from the preload) carries the feature, so both are granted; \
         the feature check also reads that map (memory after the first check). Ratio: median \
         of each run's feature / plain pair; the goal is a feature check no more than 10% \
         over a plain one. {} pairs per row; {}, commit `{}`, {}, {} users preloaded.\n",
        rows.labels("feature", "run").len(),
        args.date,
        args.commit,
        args.cpu,
        args.users
    )?;
    writeln!(
        w,
        "| backend | h2load flags | plain req/s | p50 ms | p99 ms | feature req/s | p50 ms | p99 ms | feature / plain req/s | feature / plain p50 |"
    )?;
    writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in rows.backends() {
        for label in rows.labels("feature", "label") {
            let f = |target| {
                [
                    ("section", "feature"),
                    ("backend", b.as_str()),
                    ("label", label.as_str()),
                    ("target", target),
                ]
            };
            let (plain, feature) = (f("plain"), f("feature"));
            if rows.count(&feature) == 0 {
                continue;
            }
            writeln!(
                w,
                "| {b} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                label.replace("c", "-c").replace("m", " -m").trim(),
                num(rows.median(&plain, "rps")),
                ms3(rows.median(&plain, "p50_ms")),
                ms3(rows.median(&plain, "p99_ms")),
                num(rows.median(&feature, "rps")),
                ms3(rows.median(&feature, "p50_ms")),
                ms3(rows.median(&feature, "p99_ms")),
                ratio(rows.paired_ratio(&feature, &plain, "rps")),
                ratio(rows.paired_ratio(&feature, &plain, "p50_ms")),
            )?;
        }
    }
    let checks = rows.select(&[("section", "feature_check")]);
    let granted = checks.iter().filter(|c| c["ok"] == true).count();
    writeln!(
        w,
        "\ngrpc-status check (curl, same frames): {granted}/{} answered `grpc-status: 0` with a \
         granted answer.",
        checks.len()
    )?;
    for n in notes {
        writeln!(w, "\nNote: {n}.")?;
    }
    Ok(())
}

/// The reconciler's catch-up rate (`reconcile-load`), per backend.
fn reconcile_section(w: &mut String, rows: &Rows) -> std::fmt::Result {
    writeln!(w, "\n## Reconciler catch-up (reconcile-load)\n")?;
    writeln!(
        w,
        "How fast the reconciler applies events it finds in Stripe: `reconcile-load` serves \
         `GET /v1/events` from memory (a fake Stripe on loopback, no rate limit, 100 events a \
         page), starts `tollgate serve` against it and a fresh database, lets its start-up \
         pass finish, then lists distinct `customer.subscription.updated` events (one per \
         subscription) and runs one `Admin.Reconcile` pass. Timed from the pass's first \
         `GET /v1/events` to the sweep's first subscription read, which follows the last \
         event applied. Medians over runs, a fresh database each run.\n"
    )?;
    writeln!(
        w,
        "| backend | runs | events applied / seen | pages | catch-up s | events/s |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|")?;
    let mut any = false;
    for b in rows.backends() {
        let f = [("section", "reconcile"), ("backend", b.as_str())];
        let n = rows.count(&f);
        if n == 0 {
            continue;
        }
        any = true;
        writeln!(
            w,
            "| {b} | {n} | {} / {} | {} | {} | **{}** |",
            num(rows.median(&f, "events_applied")),
            num(rows.median(&f, "events_seen")),
            count(rows.median(&f, "pages")),
            num(rows.median(&f, "seconds")),
            num(rows.median(&f, "events_per_sec")),
        )?;
    }
    if !any {
        writeln!(w, "| – | 0 | not measured in this run | | | |")?;
    }
    writeln!(
        w,
        "\nThe sweep that follows reads every subscription back from the fake, which answers \
         404; those reads are the pass's `errors` in `results.raw`, not failed events."
    )
}

/// One figure of the scaling table at `users` subjects: the scaling run's
/// own line if there is one, else, at the main run's scale, the median of
/// the main run's lines `main`.
fn scaled(
    rows: &Rows,
    backend: &str,
    users: &str,
    figure: &str,
    field: &str,
    main: Option<&[(&str, &str)]>,
) -> Option<f64> {
    let own = [
        ("section", "scale"),
        ("backend", backend),
        ("users", users),
        ("figure", figure),
    ];
    if rows.count(&own) > 0 {
        rows.median(&own, field)
    } else {
        main.and_then(|m| rows.median(m, field))
    }
}

/// HasAccess hot and cold, ingest and memory at each number of subjects.
fn scaling_section(w: &mut String, rows: &Rows, args: &Args) -> std::fmt::Result {
    writeln!(w, "\n## Scaling with the number of subjects\n")?;
    writeln!(
        w,
        "At each number of subjects (`BENCH_SCALES`), a fresh database preloaded with that \
         many users (one subscription each) and one `tollgate serve`: webhook ingest at c=8 \
         (as one run of \"Webhook ingest vs raw single-row inserts\"), then every user read \
         once (touch-all: cold, a store read each, `grpc-load -c4 -m16`), then the peak RSS \
         with all of them cached, then `h2load -c16 -m64` on one cached user with the cache \
         that full. At {} subjects, the scale of the rest of this report, ingest (median), \
         touch-all and RSS are the figures above, from the server that ran everything above; \
         only the hot path is measured again, after touch-all. Other scales: one run each.\n",
        args.users
            .parse()
            .map_or_else(|_| args.users.clone(), |u| num(Some(u)))
    )?;
    writeln!(
        w,
        "| backend | subjects | hot req/s | hot p99 ms | cold (touch-all) req/s | cold p99 ms | ingest c=8 events/s | ingest p99 ms | RSS after start | peak RSS, all touched |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut scales: Vec<String> = rows.labels("scale", "users");
    scales.sort_by_key(|u| u.parse::<u64>().unwrap_or(u64::MAX));
    let mib =
        |kb: Option<f64>| kb.map_or_else(|| "–".to_owned(), |kb| format!("{:.0} MiB", kb / 1024.0));
    let mut any = false;
    for b in rows.backends() {
        let bb = b.as_str();
        for users in &scales {
            let u = users.as_str();
            let hot = [
                ("section", "scale"),
                ("backend", bb),
                ("users", u),
                ("figure", "hot"),
            ];
            let at_main = *users == args.users;
            if rows.count(&[("section", "scale"), ("backend", bb), ("users", u)]) == 0 {
                continue;
            }
            any = true;
            let touch: &[(&str, &str)] = &[("section", "touch_all"), ("backend", bb)];
            let ingest: &[(&str, &str)] = &[
                ("section", "ingest"),
                ("backend", bb),
                ("target", "tollgate"),
                ("c", "8"),
            ];
            let rss: &[(&str, &str)] = &[("section", "rss"), ("backend", bb)];
            let main_touched = rows.select(rss).iter().any(|r| r["touched_all"] == true);
            let main = |m| at_main.then_some(m);
            let main_rss = at_main && main_touched;
            writeln!(
                w,
                "| {b} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(u.parse().ok()),
                num(rows.median(&hot, "rps")),
                num(rows.median(&hot, "p99_ms")),
                num(scaled(rows, bb, u, "cold", "rps", main(touch))),
                num(scaled(rows, bb, u, "cold", "p99_ms", main(touch))),
                num(scaled(rows, bb, u, "ingest", "rps", main(ingest))),
                num(scaled(rows, bb, u, "ingest", "p99_ms", main(ingest))),
                mib(scaled(rows, bb, u, "rss", "before_kb", main(rss))),
                mib(scaled(
                    rows,
                    bb,
                    u,
                    "rss",
                    "vmhwm_kb",
                    main_rss.then_some(rss)
                )),
            )?;
        }
    }
    if !any {
        writeln!(w, "| – | not measured in this run | | | | | | | | |")?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.raw)?;
    let rows = Rows(
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect(),
    );
    if let Some(section) = &args.section {
        let mut md = String::new();
        match section.as_str() {
            "feature" => feature_section(&mut md, &rows, &args, &args.note)?,
            other => return Err(format!("no section {other:?} (feature)").into()),
        }
        // The section alone, its heading first.
        std::fs::write(&args.out, md.trim_start())?;
        return Ok(());
    }
    let mut md = String::new();
    let w = &mut md;
    writeln!(w, "# Tollgate benchmark results\n")?;
    writeln!(w, "| | |\n|---|---|")?;
    writeln!(w, "| date | {} |", args.date)?;
    writeln!(w, "| kernel (`uname -srm`) | {} |", args.uname)?;
    writeln!(w, "| CPU (`lscpu`) | {} |", args.cpu)?;
    writeln!(w, "| commit | `{}` |", args.commit)?;
    writeln!(w, "| preloaded users | {} |", args.users)?;
    writeln!(w, "| runs per figure | {} (medians shown) |", args.runs)?;
    if !args.scales.is_empty() {
        writeln!(w, "| subjects in the scaling table | {} |", args.scales)?;
    }
    if !args.mode.is_empty() {
        writeln!(w, "| mode | {} |", args.mode)?;
    }
    if !args.wall_time.is_empty() {
        writeln!(
            w,
            "| total wall time | {} (`bench/run.sh` start to report, release build included) |",
            args.wall_time
        )?;
    }
    for n in &args.note {
        writeln!(w, "| note | {n} |")?;
    }
    writeln!(w)?;
    let backends = rows.backends();

    // 1. Hot path, h2load.
    writeln!(w, "## HasAccess hot path (h2load, one cached user)\n")?;
    writeln!(
        w,
        "Same h2load flags against Tollgate and the bare tonic baseline (a HashMap), \
         back to back within each run, Tollgate first in odd runs and the baseline first in \
         even ones. Latency from h2load's per-request log. The ratio is the median over \
         runs of each run's Tollgate / baseline pair.\n"
    )?;
    writeln!(
        w,
        "| backend | h2load flags | Tollgate req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | Tollgate / baseline |"
    )?;
    writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in &backends {
        for label in rows.labels("h2load", "label") {
            let t = [
                ("section", "h2load"),
                ("backend", b.as_str()),
                ("label", label.as_str()),
                ("target", "tollgate"),
            ];
            let base = [
                ("section", "h2load"),
                ("backend", b.as_str()),
                ("label", label.as_str()),
                ("target", "baseline"),
            ];
            if rows.count(&t) == 0 {
                continue;
            }
            let (tr, br) = (rows.median(&t, "rps"), rows.median(&base, "rps"));
            writeln!(
                w,
                "| {b} | `{}` | {} | {} | {} | {} | {} | {} | {} |",
                label.replace("c", "-c").replace("m", " -m").trim(),
                num(tr),
                num(rows.median(&t, "p50_ms")),
                num(rows.median(&t, "p99_ms")),
                num(br),
                num(rows.median(&base, "p50_ms")),
                num(rows.median(&base, "p99_ms")),
                ratio(rows.paired_ratio(&t, &base, "rps"))
            )?;
        }
    }
    let checks = rows.select(&[("section", "grpc_check")]);
    if !checks.is_empty() {
        let ok = checks.iter().filter(|c| c["ok"] == true).count();
        writeln!(
            w,
            "\ngrpc-status check after h2load (curl, same request frame): {ok}/{} answered \
             `grpc-status: 0` with a decodable granted answer.",
            checks.len()
        )?;
    }
    let not_ok = rows
        .select(&[("section", "h2load")])
        .iter()
        .filter(|r| r["ok"] != true)
        .count();
    if not_ok > 0 {
        writeln!(
            w,
            "\n**{not_ok} h2load run(s) had failed/errored/non-200 requests; see results.raw.**"
        )?;
    }

    let nd = [("section", "nodelay")];
    let stalls = rows
        .median(&[("section", "nodelay"), ("target", "baseline")], "p99_ms")
        .zip(rows.median(
            &[("section", "nodelay"), ("target", "baseline_nodelay")],
            "p99_ms",
        ))
        .is_some_and(|(without, with)| without > 20.0 && with < without / 4.0);
    if stalls {
        writeln!(
            w,
            "\nThe `-m32` rows are dominated by ~40 ms stalls that both servers show without \
             TCP_NODELAY (next table): their p99 and their ratio say more about those stalls \
             than about the servers' work."
        )?;
    }
    if rows.count(&nd) > 0 {
        writeln!(
            w,
            "\n### One HTTP/2 connection, 32 streams (`h2load -c1 -m32`)\n"
        )?;
        writeln!(
            w,
            "How a gRPC client usually calls: many requests multiplexed on one connection. \
             Tollgate serves gRPC from its own listener stream, where tonic does not set \
             TCP_NODELAY; the plain baseline is set up the same way, the second baseline sets it.\n"
        )?;
        writeln!(w, "| server | req/s | p50 ms | p90 ms | p99 ms |")?;
        writeln!(w, "|---|---:|---:|---:|---:|")?;
        for (target, name) in [
            ("tollgate", "Tollgate"),
            ("baseline", "baseline (no TCP_NODELAY, like Tollgate)"),
            ("baseline_nodelay", "baseline with TCP_NODELAY"),
        ] {
            let f = [("section", "nodelay"), ("target", target)];
            writeln!(
                w,
                "| {name} | {} | {} | {} | {} |",
                num(rows.median(&f, "rps")),
                num(rows.median(&f, "p50_ms")),
                num(rows.median(&f, "p90_ms")),
                num(rows.median(&f, "p99_ms")),
            )?;
        }
    }

    feature_section(w, &rows, &args, &[])?;

    // 2. Realistic mix.
    writeln!(w, "\n## HasAccess realistic mix (grpc-load)\n")?;
    writeln!(
        w,
        "90% of requests to a hot set of 10,000 users, 10% uniform over all users \
         (mostly cold: a store read), tonic client on the same 2 vCPUs. Each run measures \
         Tollgate and the baseline back to back, the order flipping every run. Ratio: \
         median of the per-run pairs.\n"
    )?;
    writeln!(
        w,
        "| backend | Tollgate req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | Tollgate / baseline |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in &backends {
        let t = [
            ("section", "mix"),
            ("backend", b.as_str()),
            ("target", "tollgate"),
        ];
        let base = [
            ("section", "mix"),
            ("backend", b.as_str()),
            ("target", "baseline"),
        ];
        if rows.count(&t) == 0 {
            continue;
        }
        let (tr, br) = (rows.median(&t, "rps"), rows.median(&base, "rps"));
        writeln!(
            w,
            "| {b} | {} | {} | {} | {} | {} | {} | {} |",
            num(tr),
            num(rows.median(&t, "p50_ms")),
            num(rows.median(&t, "p99_ms")),
            num(br),
            num(rows.median(&base, "p50_ms")),
            num(rows.median(&base, "p99_ms")),
            ratio(rows.paired_ratio(&t, &base, "rps"))
        )?;
    }

    // 3. Ingest.
    writeln!(w, "\n## Webhook ingest vs raw single-row inserts\n")?;
    writeln!(
        w,
        "Distinct signed events (~60% customer.subscription.updated, ~30% invoice.paid, \
         ~10% invoice.payment_succeeded) POSTed to `/webhooks/stripe`; the ceiling inserts \
         the same payloads into an `events`-like table, one transaction per row, same \
         concurrency and durability (SQLite WAL + synchronous=FULL through one writer \
         connection; PostgreSQL defaults, one pool connection per worker), as many rows \
         as Tollgate ingested in the same run. Ratio: median of the per-run pairs.\n"
    )?;
    writeln!(
        w,
        "| backend | concurrency | Tollgate events/s | p50 ms | p99 ms | raw inserts rows/s | p50 ms | p99 ms | Tollgate / raw |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in &backends {
        for c in rows.labels("ingest", "c") {
            let t = [
                ("section", "ingest"),
                ("backend", b.as_str()),
                ("c", c.as_str()),
                ("target", "tollgate"),
            ];
            let raw = [
                ("section", "ingest"),
                ("backend", b.as_str()),
                ("c", c.as_str()),
                ("target", "raw"),
            ];
            if rows.count(&t) == 0 && rows.count(&raw) == 0 {
                continue;
            }
            let (tr, rr) = (rows.median(&t, "rps"), rows.median(&raw, "rps"));
            writeln!(
                w,
                "| {b} | {c} | {} | {} | {} | {} | {} | {} | {} |",
                num(tr),
                num(rows.median(&t, "p50_ms")),
                num(rows.median(&t, "p99_ms")),
                num(rr),
                num(rows.median(&raw, "p50_ms")),
                num(rows.median(&raw, "p99_ms")),
                ratio(rows.paired_ratio(&t, &raw, "rps"))
            )?;
        }
    }
    let ingests = rows.select(&[("section", "ingest"), ("target", "tollgate")]);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = 0;
    for r in &ingests {
        if let Some(o) = r["outcomes"].as_object() {
            for (k, v) in o {
                *outcomes.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        failures += r["non_200"].as_u64().unwrap_or(0) + r["errors"].as_u64().unwrap_or(0);
    }
    if !outcomes.is_empty() {
        let list: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let body = rows.median(&[("section", "ingest")], "avg_body_bytes");
        writeln!(
            w,
            "\nOutcomes over all ingest runs: {}; non-200 or transport errors: {failures}. \
             Average body {} bytes.",
            list.join(", "),
            num(body)
        )?;
    }

    // 4. Mixed load.
    writeln!(w, "\n## HasAccess under webhook load\n")?;
    writeln!(
        w,
        "grpc-load realistic mix at a fixed rate, alone and while webhook-load sends at \
         ~50% of the measured c=8 ingest rate. The last column is the median over runs of \
         each run's p99 with ingest / p99 alone (measured back to back).\n"
    )?;
    writeln!(
        w,
        "| backend | HasAccess target req/s | alone p50 ms | alone p99 ms | with ingest p50 ms | with ingest p99 ms | ingest events/s achieved | ingest p99 ms | p99 with ingest / alone |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in &backends {
        let alone = [
            ("section", "mixed"),
            ("backend", b.as_str()),
            ("phase", "alone"),
        ];
        let with = [
            ("section", "mixed"),
            ("backend", b.as_str()),
            ("phase", "with_ingest"),
        ];
        let ing = [("section", "mixed_ingest"), ("backend", b.as_str())];
        if rows.count(&alone) == 0 {
            continue;
        }
        writeln!(
            w,
            "| {b} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(rows.median(&alone, "target_rate")),
            num(rows.median(&alone, "p50_ms")),
            num(rows.median(&alone, "p99_ms")),
            num(rows.median(&with, "p50_ms")),
            num(rows.median(&with, "p99_ms")),
            num(rows.median(&ing, "rps")),
            num(rows.median(&ing, "p99_ms")),
            times(rows.paired_ratio(&with, &alone, "p99_ms")),
        )?;
    }

    // 5. Other figures.
    writeln!(w, "\n## Startup, preload, cold reads, memory\n")?;
    writeln!(
        w,
        "| backend | preload rows/s | `serve` start → first HasAccess ms | touch-all (each user once, cold) req/s | p50 ms | p99 ms | server RSS after startup | peak RSS (VmHWM) at the end | server log written |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for b in &backends {
        let bb = b.as_str();
        let mb = |f: Option<f64>| f.map(|kb| format!("{:.0} MiB", kb / 1024.0));
        let rss = [("section", "rss"), ("backend", bb)];
        let touched = rows.select(&rss).iter().any(|r| r["touched_all"] == true);
        writeln!(
            w,
            "| {b} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
            num(rows.median(&[("section", "preload"), ("backend", bb)], "rows_per_s")),
            num(rows.median(&[("section", "startup"), ("backend", bb)], "ms")),
            num(rows.median(&[("section", "touch_all"), ("backend", bb)], "rps")),
            num(rows.median(&[("section", "touch_all"), ("backend", bb)], "p50_ms")),
            num(rows.median(&[("section", "touch_all"), ("backend", bb)], "p99_ms")),
            mb(rows.median(&[("section", "rss"), ("backend", bb)], "before_kb"))
                .unwrap_or_else(|| "–".into()),
            mb(rows.median(&rss, "vmhwm_kb")).unwrap_or_else(|| "–".into()),
            if touched {
                " (all users touched)"
            } else {
                " (users not all touched)"
            },
            rows.median(&rss, "log_bytes")
                .map(|b| format!("{:.0} MiB", b / 1048576.0))
                .unwrap_or_else(|| "–".into()),
        )?;
    }
    writeln!(
        w,
        "\nRaw result lines (every run, not just medians) are in `bench/results.raw`."
    )?;

    reconcile_section(w, &rows)?;
    scaling_section(w, &rows, &args)?;
    let old_path = args.keep_from.as_ref().unwrap_or(&args.out);
    let old = match std::fs::read_to_string(old_path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", old_path.display()).into()),
    };
    eprintln!(
        "report: sections carried over from {}: {:?}",
        old_path.display(),
        kept_titles(&old, &md)
    );
    std::fs::write(&args.out, merge_kept_sections(&old, &md))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn scaling_rows_fall_back_to_the_main_run_at_its_scale_only() {
        let rows = Rows(
            [
                r#"{"section":"touch_all","backend":"sqlite","rps":8000}"#,
                r#"{"section":"scale","backend":"sqlite","users":1000000,"figure":"hot","rps":50000}"#,
                r#"{"section":"scale","backend":"sqlite","users":10000,"figure":"cold","rps":20000}"#,
            ]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        );
        let main: &[(&str, &str)] = &[("section", "touch_all"), ("backend", "sqlite")];
        let cold = |users| scaled(&rows, "sqlite", users, "cold", "rps", Some(main));
        assert_eq!(cold("10000"), Some(20000.0), "a scale's own line first");
        assert_eq!(cold("1000000"), Some(8000.0), "else the main run's");
        assert_eq!(scaled(&rows, "sqlite", "100000", "cold", "rps", None), None);
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(num(Some(59284.5)), "59,285");
        assert_eq!(num(Some(0.1234)), "0.12");
        assert_eq!(num(None), "–");
        assert_eq!(count(Some(20.0)), "20");
        assert_eq!(count(Some(10000.0)), "10,000");
    }
}
