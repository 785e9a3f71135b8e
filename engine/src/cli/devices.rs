//! `kiln devices [--json]`: every registered backend, what its probe found on
//! this machine, and the capabilities of each device it found (the device is
//! opened to ask). A backend with no usable device says why; a device that
//! fails to open, or a backend that panics, is reported and the listing goes
//! on.

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::anyhow;
use hal::{
    ApiVersion, BackendFactory, Capabilities, DeviceInfo, KvLayout, Probe, Registry, Unavailable,
    API_VERSION,
};
use serde_json::{json, Value};

use super::{panic_message, print_stdout, CmdResult, Failure};

/// Arguments of `kiln devices`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevicesArgs {
    /// Print the listing as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `kiln devices`.
pub(crate) fn run(registry: &Registry, args: &DevicesArgs) -> CmdResult {
    let backends: Vec<BackendReport> = registry
        .factories()
        .iter()
        .map(|f| BackendReport::probe(registry, f))
        .collect();
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&backends)).map_err(|e| {
            Failure::error(anyhow::Error::new(e).context("could not encode the listing"))
        })?;
        s.push('\n');
        s
    } else {
        to_text(&backends).map_err(|e| Failure::error(anyhow!("could not format: {e}")))?
    };
    print_stdout(&text)
}

/// What `kiln devices` found for one registered factory.
struct BackendReport {
    kind: &'static str,
    crate_name: &'static str,
    description: &'static str,
    api_version: ApiVersion,
    probe: ProbeReport,
}

/// The probe's answer.
enum ProbeReport {
    /// Devices found, each opened to read its capabilities.
    Available(Vec<DeviceReport>),
    /// No usable device, and why.
    Unavailable(Unavailable),
    /// The probe panicked (a bug in the backend).
    Panicked(String),
}

/// One device the probe found.
struct DeviceReport {
    /// `kind:index`.
    name: String,
    info: DeviceInfo,
    /// Its capabilities, or why it could not be opened.
    opened: Result<Capabilities, String>,
}

impl BackendReport {
    fn probe(registry: &Registry, f: &BackendFactory) -> Self {
        let probe = match catch_unwind(AssertUnwindSafe(|| (f.probe)())) {
            Ok(Probe::Available(devices)) => ProbeReport::Available(
                devices
                    .into_iter()
                    .map(|info| DeviceReport::open(registry, f.kind, info))
                    .collect(),
            ),
            Ok(Probe::Unavailable(why)) => ProbeReport::Unavailable(why),
            Err(panic) => ProbeReport::Panicked(panic_message(panic.as_ref())),
        };
        BackendReport {
            kind: f.kind,
            crate_name: f.crate_name,
            description: f.description,
            api_version: f.api_version,
            probe,
        }
    }
}

impl DeviceReport {
    fn open(registry: &Registry, kind: &str, info: DeviceInfo) -> Self {
        let name = format!("{kind}:{}", info.index);
        let opened = match catch_unwind(AssertUnwindSafe(|| registry.open(&name))) {
            Ok(Ok(device)) => Ok(device.capabilities().clone()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!(
                "panicked while opening: {}",
                panic_message(panic.as_ref())
            )),
        };
        DeviceReport { name, info, opened }
    }
}

/// `nhd`, or `vllm_split_x:X` (X elements per innermost K chunk).
fn layout_name(layout: &KvLayout) -> String {
    match layout {
        KvLayout::Nhd => "nhd".to_string(),
        KvLayout::VllmSplitX { x } => format!("vllm_split_x:{x}"),
    }
}

/// The text listing of every field of `Capabilities`, as `(label, value)`.
fn capability_lines(c: &Capabilities) -> Vec<(&'static str, String)> {
    fn join<T>(items: &[T], f: impl Fn(&T) -> String, empty: &str) -> String {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.iter().map(f).collect::<Vec<_>>().join(", ")
        }
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("device", c.device.clone()),
        (
            "activation dtypes",
            join(&c.activation_dtypes, |d| d.to_string(), "none"),
        ),
        (
            "KV cache dtypes",
            join(&c.kv_cache_dtypes, |d| d.to_string(), "none"),
        ),
        ("KV layouts", join(&c.kv_layouts, layout_name, "none")),
        ("head dims", join(&c.head_dims, |d| d.to_string(), "any")),
        (
            "block sizes",
            join(&c.block_sizes, |d| d.to_string(), "any"),
        ),
        (
            "quant formats",
            join(&c.quant_formats, |q| q.name().to_string(), "none"),
        ),
        (
            "precisions",
            join(&c.precisions, |p| p.name().to_string(), "none"),
        ),
        ("batch invariant", yes_no(c.batch_invariant)),
        ("step capture", yes_no(c.step_capture)),
        ("memory", memory_text(c.memory_bytes)),
    ]
}

fn memory_text(bytes: Option<u64>) -> String {
    match bytes {
        // Display only: the exact count follows in bytes.
        #[allow(clippy::cast_precision_loss)]
        Some(b) => format!("{:.1} GiB ({b} bytes)", b as f64 / (1u64 << 30) as f64),
        None => "unknown".to_string(),
    }
}

fn to_text(backends: &[BackendReport]) -> Result<String, std::fmt::Error> {
    let mut s = String::new();
    let mut available = 0;
    for b in backends {
        writeln!(
            s,
            "{}  ({}, HAL API {})",
            b.kind, b.crate_name, b.api_version
        )?;
        writeln!(s, "  {}", b.description)?;
        match &b.probe {
            ProbeReport::Unavailable(why) => writeln!(s, "  unavailable: {why}")?,
            ProbeReport::Panicked(msg) => {
                writeln!(
                    s,
                    "  unavailable: the probe panicked (a bug in {}): {msg}",
                    b.crate_name
                )?;
            }
            ProbeReport::Available(devices) if devices.is_empty() => {
                writeln!(s, "  unavailable: the probe found no device")?;
            }
            ProbeReport::Available(devices) => {
                available += 1;
                for d in devices {
                    writeln!(s, "  {}  {}", d.name, d.info.description)?;
                    match &d.opened {
                        Ok(caps) => {
                            for (label, value) in capability_lines(caps) {
                                // The probe's description usually says it already.
                                if label == "device" && value == d.info.description {
                                    continue;
                                }
                                writeln!(s, "    {:<18} {value}", format!("{label}:"))?;
                            }
                        }
                        Err(e) => writeln!(s, "    failed to open: {e}")?,
                    }
                }
            }
        }
        writeln!(s)?;
    }
    writeln!(
        s,
        "{} backends registered (HAL API {API_VERSION}), {available} with devices on this machine",
        backends.len()
    )?;
    Ok(s)
}

fn unavailable_json(why: &Unavailable) -> Value {
    let (reason, detail) = match why {
        Unavailable::NoDriver(s) => ("no_driver", s),
        Unavailable::NoDevice(s) => ("no_device", s),
        Unavailable::NoPlugin(s) => ("no_plugin", s),
        Unavailable::NotImplemented(s) => ("not_implemented", s),
    };
    json!({ "reason": reason, "detail": detail, "message": why.to_string() })
}

fn capabilities_json(c: &Capabilities) -> Value {
    let names = |v: Vec<String>| Value::from(v);
    json!({
        "device": c.device,
        "memory_bytes": c.memory_bytes,
        "activation_dtypes": names(c.activation_dtypes.iter().map(|d| d.to_string()).collect()),
        "kv_cache_dtypes": names(c.kv_cache_dtypes.iter().map(|d| d.to_string()).collect()),
        "kv_layouts": names(c.kv_layouts.iter().map(layout_name).collect()),
        "head_dims": c.head_dims,
        "block_sizes": c.block_sizes,
        "quant_formats": names(c.quant_formats.iter().map(|q| q.name().to_string()).collect()),
        "precisions": names(c.precisions.iter().map(|p| p.name().to_string()).collect()),
        "batch_invariant": c.batch_invariant,
        "step_capture": c.step_capture,
    })
}

fn to_json(backends: &[BackendReport]) -> Value {
    let backends: Vec<Value> = backends
        .iter()
        .map(|b| {
            let mut v = json!({
                "kind": b.kind,
                "crate": b.crate_name,
                "description": b.description,
                "api_version": b.api_version.to_string(),
            });
            let (available, devices, unavailable) = match &b.probe {
                ProbeReport::Available(devices) => {
                    let devices: Vec<Value> = devices
                        .iter()
                        .map(|d| {
                            let mut dv = json!({
                                "name": d.name,
                                "index": d.info.index,
                                "description": d.info.description,
                            });
                            match &d.opened {
                                Ok(caps) => dv["capabilities"] = capabilities_json(caps),
                                Err(e) => dv["open_error"] = Value::from(e.as_str()),
                            }
                            dv
                        })
                        .collect();
                    let unavailable = if devices.is_empty() {
                        json!({ "reason": "no_device", "detail": "the probe found no device",
                                "message": "no device: the probe found no device" })
                    } else {
                        Value::Null
                    };
                    (!devices.is_empty(), devices, unavailable)
                }
                ProbeReport::Unavailable(why) => (false, Vec::new(), unavailable_json(why)),
                ProbeReport::Panicked(msg) => (
                    false,
                    Vec::new(),
                    json!({ "reason": "probe_panicked", "detail": msg,
                            "message": format!("the probe panicked: {msg}") }),
                ),
            };
            v["available"] = Value::from(available);
            v["devices"] = Value::from(devices);
            v["unavailable"] = unavailable;
            v
        })
        .collect();
    json!({ "hal_api_version": API_VERSION.to_string(), "backends": backends })
}
