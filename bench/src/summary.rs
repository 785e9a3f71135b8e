//! The run's results as a markdown table, read against the roofline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::case::{Cost, Family, Temp};
use crate::roofline::Roofline;
use crate::timing::{Budget, Timing};

/// What happened to one case on one device.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Timed.
    Timed(Timing),
    /// Refused by the device through `supports` (its reason).
    Skipped(String),
    /// Building or running failed.
    Failed(String),
}

/// One case on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Case name (`family/label/temp`).
    pub case: String,
    /// Op family.
    pub family: Family,
    /// Hot or cold.
    pub temp: Temp,
    /// Device name (`cpu`, `cuda:0`).
    pub backend: String,
    /// FLOPs and bytes of one call.
    pub cost: Cost,
    /// Bytes touched over a cycle of copies (= `cost.bytes` when hot).
    pub working_set: u64,
    /// The result.
    pub outcome: Outcome,
}

/// Which roof applies to a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Arithmetic intensity at or above the ridge point: peak FLOP/s.
    Compute,
    /// Memory-bound otherwise (cold, or larger than the L3 buffer): DRAM
    /// bandwidth.
    Dram,
    /// Memory-bound, hot, and no larger than the buffer the L3 bandwidth
    /// was measured on: L3 bandwidth.
    L3,
}

impl Bound {
    /// Column text.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Dram => "DRAM",
            Bound::L3 => "L3",
        }
    }
}

/// A timed row read against the roofline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Best time per call, seconds.
    pub secs: f64,
    /// Achieved GFLOP/s (10⁹ FLOP/s).
    pub gflops: f64,
    /// Achieved GB/s (10⁹ bytes/s).
    pub gbps: f64,
    /// The roof that applies.
    pub bound: Bound,
    /// Percent of peak FLOP/s (CPU rows only).
    pub pct_flops: Option<f64>,
    /// Percent of the applicable bandwidth (CPU rows only).
    pub pct_bw: Option<f64>,
}

/// Whether the roofline applies to a device: it is measured on the host CPU.
pub fn is_host_cpu(backend: &str) -> bool {
    backend == "cpu" || backend.starts_with("cpu:")
}

/// Whether the CPU backend runs on one thread only (`KILN_NUM_THREADS=1`):
/// its rows are then read against the 1-thread roofline.
fn cpu_single_threaded() -> bool {
    std::env::var("KILN_NUM_THREADS").is_ok_and(|v| v.trim() == "1")
}

/// Read `row` (timed in `timing`) against `roof`.
pub fn verdict(row: &Row, timing: &Timing, roof: &Roofline) -> Verdict {
    let secs = timing.best_secs().max(1e-12);
    let gflops = row.cost.flops as f64 / secs / 1e9;
    let gbps = row.cost.bytes as f64 / secs / 1e9;
    let one = cpu_single_threaded();
    let (peak, dram, l3) = if one {
        (roof.peak_gflops_1t, roof.dram_gbps_1t, roof.l3_gbps_1t)
    } else {
        (roof.peak_gflops, roof.dram_gbps, roof.l3_gbps)
    };
    let bound = if row.cost.intensity() >= peak / dram {
        Bound::Compute
    } else if row.temp == Temp::Hot && row.working_set <= roof.l3_buffer as u64 {
        Bound::L3
    } else {
        Bound::Dram
    };
    let cpu = is_host_cpu(&row.backend);
    let bw = if bound == Bound::L3 { l3 } else { dram };
    Verdict {
        secs,
        gflops,
        gbps,
        bound,
        pct_flops: cpu.then(|| 100.0 * gflops / peak),
        pct_bw: cpu.then(|| 100.0 * gbps / bw),
    }
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The roofline measured at the start.
    pub roofline: Roofline,
    /// Quick mode.
    pub quick: bool,
    /// Timing budget per case.
    pub budget: Budget,
    /// Load average before the roofline was measured.
    pub load_start: Option<[f64; 3]>,
    /// Load average when the run finished.
    pub load_end: Option<[f64; 3]>,
    /// Devices benchmarked: `(name, description)`.
    pub devices: Vec<(String, String)>,
    /// Devices that could not be opened, and other remarks.
    pub notes: Vec<String>,
    /// One row per case per device, in run order.
    pub rows: Vec<Row>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Cold working-set threshold in bytes.
    pub cold_bytes: usize,
}

impl Summary {
    /// Rows timed.
    pub fn timed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Timed(_)))
    }

    /// Rows skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// Rows failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.rows.iter().filter(|r| f(&r.outcome)).count()
    }

    /// The whole report as markdown: header, hot and cold tables, skips and
    /// failures.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        for temp in [Temp::Hot, Temp::Cold] {
            self.table(&mut s, temp);
        }
        self.skips(&mut s);
        let failed: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n## Failed\n");
            for r in failed {
                if let Outcome::Failed(m) = &r.outcome {
                    let _ = writeln!(s, "- `{}` on `{}`: {}", r.case, r.backend, one_line(m));
                }
            }
        }
        s
    }

    fn header(&self, s: &mut String) {
        let r = &self.roofline;
        let llc = r.llc_bytes.map_or("LLC size unknown".to_string(), |b| {
            format!("LLC {}", mib(b))
        });
        let b = &self.budget;
        let _ = writeln!(s, "# Kiln kernel benchmarks\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(
            s,
            "| mode | {} — best of {}–{} samples per case, at most {:.2} s (each sample ≥ {} µs of back-to-back calls, each call = op + `synchronize`) |",
            if self.quick { "quick" } else { "full" },
            b.min_samples,
            b.max_samples,
            b.max_time.as_secs_f64(),
            b.min_sample.as_micros()
        );
        let _ = writeln!(
            s,
            "| machine | {}, {} threads, {}, {llc} |",
            r.cpu,
            r.threads,
            r.simd.name()
        );
        let _ = writeln!(
            s,
            "| load average (1/5/15 min) | {} at start, {} at end |",
            loadavg(self.load_start),
            loadavg(self.load_end)
        );
        let _ = writeln!(
            s,
            "| peak fp32 FMA | {:.1} GFLOP/s (1 thread), {:.1} GFLOP/s ({} threads) |",
            r.peak_gflops_1t, r.peak_gflops, r.threads
        );
        let _ = writeln!(
            s,
            "| DRAM read ({} buffer) | {:.1} GB/s (1 thread), {:.1} GB/s ({} threads) |",
            mib(r.dram_buffer as u64),
            r.dram_gbps_1t,
            r.dram_gbps,
            r.threads
        );
        let _ = writeln!(
            s,
            "| L3 read ({} buffer) | {:.1} GB/s (1 thread), {:.1} GB/s ({} threads) |",
            mib(r.l3_buffer as u64),
            r.l3_gbps_1t,
            r.l3_gbps,
            r.threads
        );
        let _ = writeln!(
            s,
            "| ridge point | {:.1} FLOP/byte (peak FLOP/s ÷ DRAM GB/s, all threads) |",
            r.ridge()
        );
        for (name, desc) in &self.devices {
            let _ = writeln!(s, "| device `{name}` | {} |", one_line(desc));
        }
        for n in &self.notes {
            let _ = writeln!(s, "| note | {} |", one_line(n));
        }
        let _ = writeln!(
            s,
            "| cases | {} timed, {} skipped, {} failed, in {:.0} s |",
            self.timed(),
            self.skipped(),
            self.failed(),
            self.elapsed.as_secs_f64()
        );
    }

    fn table(&self, s: &mut String, temp: Temp) {
        let rows: Vec<(&Row, Verdict)> = self
            .rows
            .iter()
            .filter(|r| r.temp == temp)
            .filter_map(|r| match &r.outcome {
                Outcome::Timed(t) => Some((r, verdict(r, t, &self.roofline))),
                _ => None,
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        match temp {
            Temp::Hot => {
                let _ = writeln!(s, "\n## Hot (same weights every call)\n");
            }
            Temp::Cold => {
                let _ = writeln!(
                    s,
                    "\n## Cold (calls cycle through copies of the weights / KV cache: working set > {})\n",
                    mib(self.cold_bytes as u64)
                );
            }
        }
        let _ = writeln!(
            s,
            "| case | backend | time | GFLOP/s | GB/s | bound | % peak FLOP/s | % BW |"
        );
        let _ = writeln!(s, "|---|---|--:|--:|--:|---|--:|--:|");
        for (r, v) in rows {
            let pct = |p: Option<f64>, applies: bool| match p {
                None => "—".to_string(),
                Some(p) if applies => format!("**{p:.0}%**"),
                Some(p) => format!("{p:.0}%"),
            };
            let flops = if r.cost.flops == 0 {
                "—".to_string()
            } else {
                format!("{:.1}", v.gflops)
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {flops} | {:.1} | {} | {} | {} |",
                r.case,
                r.backend,
                duration(v.secs),
                v.gbps,
                v.bound.name(),
                pct(v.pct_flops, v.bound == Bound::Compute),
                pct(v.pct_bw, v.bound != Bound::Compute),
            );
        }
    }

    fn skips(&self, s: &mut String) {
        let mut groups: BTreeMap<(&str, Family, &str), usize> = BTreeMap::new();
        for r in &self.rows {
            if let Outcome::Skipped(reason) = &r.outcome {
                *groups
                    .entry((r.backend.as_str(), r.family, reason.as_str()))
                    .or_default() += 1;
            }
        }
        if groups.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n## Skipped (refused through `supports`)\n");
        let _ = writeln!(
            s,
            "| backend | family | cases | reason |\n|---|---|--:|---|"
        );
        for ((backend, family, reason), n) in groups {
            let _ = writeln!(
                s,
                "| {backend} | {} | {n} | {} |",
                family.name(),
                one_line(reason)
            );
        }
    }
}

/// Seconds as `456 ns`, `12.3 µs`, `1.23 ms` or `1.23 s`.
pub fn duration(secs: f64) -> String {
    if secs < 1e-6 {
        format!("{:.0} ns", secs * 1e9)
    } else if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.trailing_zeros() >= 30 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn loadavg(l: Option<[f64; 3]>) -> String {
    l.map_or("unknown".to_string(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

/// Keep a message inside one table cell.
fn one_line(m: &str) -> String {
    m.replace('\n', " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roofline::Simd;

    fn roof() -> Roofline {
        Roofline {
            cpu: "test".into(),
            simd: Simd::Avx512,
            threads: 2,
            peak_gflops_1t: 200.0,
            peak_gflops: 400.0,
            dram_gbps_1t: 15.0,
            dram_gbps: 20.0,
            l3_gbps_1t: 30.0,
            l3_gbps: 50.0,
            dram_buffer: 1 << 30,
            l3_buffer: 64 << 20,
            llc_bytes: Some(100 << 20),
        }
    }

    fn row(flops: u64, bytes: u64, temp: Temp, working_set: u64, backend: &str) -> Row {
        Row {
            case: "x".into(),
            family: Family::Gemm,
            temp,
            backend: backend.into(),
            cost: Cost { flops, bytes },
            working_set,
            outcome: Outcome::Skipped(String::new()),
        }
    }

    fn timing(secs: f64) -> Timing {
        let d = Duration::from_secs_f64(secs);
        Timing {
            best: d,
            median: d,
            samples: 1,
            calls: 1,
        }
    }

    #[test]
    fn verdicts_pick_the_applicable_roof() {
        if cpu_single_threaded() {
            return; // the percentages below assume the all-thread roof
        }
        // 1 GB in 0.1 s from DRAM: 10 GB/s, half of 20.
        let r = row(1_000_000_000, 1_000_000_000, Temp::Cold, 2 << 30, "cpu");
        let v = verdict(&r, &timing(0.1), &roof());
        assert_eq!(v.bound, Bound::Dram);
        assert!((v.gbps - 10.0).abs() < 1e-6);
        assert!((v.pct_bw.unwrap() - 50.0).abs() < 1e-6);
        // Hot and small: the L3 roof.
        let r = row(0, 1_000_000, Temp::Hot, 1_000_000, "cpu");
        assert_eq!(verdict(&r, &timing(1e-4), &roof()).bound, Bound::L3);
        // 100 GFLOP in 1 s at intensity 100: compute-bound, 25% of 400.
        let r = row(100_000_000_000, 1_000_000_000, Temp::Hot, 1 << 20, "cuda:0");
        let v = verdict(&r, &timing(1.0), &roof());
        assert_eq!(v.bound, Bound::Compute);
        assert_eq!(v.pct_flops, None, "no CPU roofline for a GPU");
    }

    #[test]
    fn formats() {
        assert_eq!(duration(4.56e-7), "456 ns");
        assert_eq!(duration(1.234e-5), "12.3 µs");
        assert_eq!(duration(1.234e-3), "1.23 ms");
        assert_eq!(duration(2.5), "2.50 s");
        assert_eq!(mib(300 << 20), "300 MiB");
        assert_eq!(mib(1 << 30), "1 GiB");
    }

    #[test]
    fn markdown_has_tables_and_skips() {
        let mut timed = row(2_000_000, 1_000_000, Temp::Hot, 1_000_000, "cpu");
        timed.case = "gemm/f32/m/decode_b1/hot".into();
        timed.outcome = Outcome::Timed(timing(1e-4));
        let mut skipped = row(1, 1, Temp::Cold, 1, "cpu");
        skipped.outcome = Outcome::Skipped("not implemented yet".into());
        let mut failed = row(1, 1, Temp::Hot, 1, "cpu");
        failed.outcome = Outcome::Failed("boom | bang".into());
        let s = Summary {
            roofline: roof(),
            quick: true,
            budget: Budget::quick(),
            load_start: Some([0.5, 0.4, 0.3]),
            load_end: None,
            devices: vec![("cpu".into(), "test cpu".into())],
            notes: vec![],
            rows: vec![timed, skipped, failed],
            elapsed: Duration::from_secs(3),
            cold_bytes: 300 << 20,
        };
        let md = s.to_markdown();
        assert!(
            md.contains("| `gemm/f32/m/decode_b1/hot` | cpu | 100.0 µs | 20.0 | 10.0 |"),
            "{md}"
        );
        assert!(
            md.contains("0.50 0.40 0.30 at start, unknown at end"),
            "{md}"
        );
        assert!(
            md.contains("| cpu | gemm | 1 | not implemented yet |"),
            "{md}"
        );
        assert!(md.contains("boom \\| bang"), "{md}");
        assert!(!md.contains("## Cold"), "no timed cold rows: {md}");
        assert_eq!((s.timed(), s.skipped(), s.failed()), (1, 1, 1));
    }
}
