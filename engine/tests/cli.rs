//! The `kiln` binary, run as a user runs it.

use std::process::{Command, Output};

use hal::{Probe, Unavailable};

/// Every in-tree kind, in listing order.
const KINDS: [&str; 7] = ["cpu", "cuda", "hip", "opencl", "wgpu", "tpu", "loopback"];

/// A small, fast selection of conformance cases that the loopback backend runs.
const SMALL_FILTER: &str = "^elementwise/";

fn kiln(args: &[&str]) -> Output {
    kiln_env(args, None)
}

fn kiln_env(args: &[&str], hal_case: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args).env_remove("HAL_CASE");
    if let Some(filter) = hal_case {
        cmd.env("HAL_CASE", filter);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("could not run kiln {args:?}: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the library's own probe says about `kind`.
fn probe(kind: &str) -> Probe {
    let registry = kiln::backends::default_registry();
    match registry.get(kind) {
        Some(f) => (f.probe)(),
        None => panic!("{kind} is not registered"),
    }
}

#[test]
fn devices_lists_every_backend_and_why_stubs_are_unavailable() {
    let out = kiln(&["devices"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let blocks: Vec<&str> = stdout.split("\n\n").collect();
    for kind in KINDS {
        let header = format!("{kind}  (");
        let Some(block) = blocks.iter().find(|b| b.starts_with(&header)) else {
            panic!("kiln devices does not list {kind}:\n{stdout}");
        };
        assert!(block.contains("HAL API 0."), "{block}");
        match probe(kind) {
            Probe::Unavailable(Unavailable::NotImplemented(_)) => assert!(
                block.contains("unavailable: not implemented yet"),
                "{kind} is a stub but kiln devices says:\n{block}"
            ),
            Probe::Unavailable(_) => assert!(block.contains("unavailable: "), "{block}"),
            Probe::Available(devices) => {
                for d in devices {
                    let name = format!("{kind}:{}", d.index);
                    assert!(block.contains(&name), "{name} missing:\n{block}");
                }
                assert!(block.contains("activation dtypes:"), "{block}");
            }
        }
    }
    let loopback = blocks.iter().find(|b| b.starts_with("loopback  ("));
    let loopback = loopback.copied().unwrap_or_default();
    for field in [
        "loopback:0",
        "activation dtypes:",
        "KV cache dtypes:",
        "KV layouts:",
        "head dims:",
        "block sizes:",
        "quant formats:",
        "precisions:",
        "batch invariant:",
        "step capture:",
        "memory:",
    ] {
        assert!(loopback.contains(field), "{field} missing:\n{loopback}");
    }
}

#[test]
fn devices_json_has_every_backend() {
    let out = kiln(&["devices", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "kiln devices --json is not JSON: {e}\n{}",
            text(&out.stdout)
        ),
    };
    let backends = v["backends"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = backends.iter().filter_map(|b| b["kind"].as_str()).collect();
    assert_eq!(kinds, KINDS);
    for b in &backends {
        if b["available"] == serde_json::Value::Bool(true) {
            let devices = b["devices"].as_array().cloned().unwrap_or_default();
            assert!(!devices.is_empty(), "{b}");
        } else {
            assert!(b["unavailable"]["reason"].is_string(), "{b}");
        }
    }
    let loopback = &backends[6];
    assert_eq!(loopback["available"], serde_json::Value::Bool(true));
    let caps = &loopback["devices"][0]["capabilities"];
    let dtypes = caps["activation_dtypes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(dtypes.iter().any(|d| d == "f32"), "{caps}");
    for stub in ["cuda", "hip", "opencl", "wgpu", "tpu", "cpu"] {
        if let Probe::Unavailable(Unavailable::NotImplemented(_)) = probe(stub) {
            let b = backends.iter().find(|b| b["kind"] == stub);
            let reason = b.map(|b| b["unavailable"]["reason"].clone());
            assert_eq!(reason, Some("not_implemented".into()), "{stub}");
        }
    }
}

/// `conformance loopback:0: N passed, 0 failed, M skipped` with N > 0.
fn assert_passed(out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}{}",
        out.status.code(),
        text(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("conformance loopback:0: ") && last.contains(" passed, 0 failed"),
        "{stdout}"
    );
    assert!(
        !last.starts_with("conformance loopback:0: 0 passed"),
        "{stdout}"
    );
}

#[test]
fn conformance_on_loopback_passes() {
    assert_passed(&kiln(&[
        "conformance",
        "--device",
        "loopback",
        "--filter",
        SMALL_FILTER,
    ]));
}

#[test]
fn conformance_selects_families() {
    let out = kiln(&[
        "conformance",
        "--device",
        "loopback",
        "--family",
        "elementwise",
        "--family",
        "gemm",
        "--filter",
        "_f32_",
        "--verbose",
    ]);
    assert_passed(&out);
    let stdout = text(&out.stdout);
    for line in stdout.lines().filter(|l| l.starts_with("ok ")) {
        assert!(
            line.contains(" elementwise/") || line.contains(" gemm/"),
            "{line}"
        );
    }
}

#[test]
fn conformance_takes_its_filter_from_hal_case() {
    assert_passed(&kiln_env(
        &["conformance", "--device", "loopback"],
        Some(SMALL_FILTER),
    ));
}

#[test]
fn conformance_on_an_unavailable_device_says_why() {
    let reason = match probe("cuda") {
        Probe::Unavailable(why) => why,
        Probe::Available(_) => {
            println!("a CUDA device is available here; nothing to check");
            return;
        }
    };
    let out = kiln(&["conformance", "--device", "cuda"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cuda:0 is unavailable on this machine")
            && stderr.contains(&reason.to_string()),
        "{stderr}"
    );
}

#[test]
fn conformance_rejects_bad_device_names() {
    let out = kiln(&["conformance", "--device", "bogus:x"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid device name \"bogus:x\""),
        "{stderr}"
    );

    let out = kiln(&["conformance", "--device", "bogus"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown device kind \"bogus\"") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn conformance_rejects_bad_filters_and_families() {
    let out = kiln(&["conformance", "--device", "loopback", "--filter", "("]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a valid regex"), "{stderr}");

    let out = kiln_env(&["conformance", "--device", "loopback"], Some("["));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HAL_CASE"), "{stderr}");

    let out = kiln(&["conformance", "--device", "loopback", "--family", "nope"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("paged_attention"), "{stderr}");

    let out = kiln(&[
        "conformance",
        "--device",
        "loopback",
        "--filter",
        "no-case-has-this-name",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no conformance case matched"), "{stderr}");
}

#[test]
fn bench_with_an_unknown_device_says_why() {
    let out = kiln(&["bench", "--device", "bogus", "--quick"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn without_pip_the_default_model_fetch_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["download"])
        .env("KILN_HOME", home.path())
        .env("KILN_PYTHON", "kiln-no-such-python")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("pip") && err.contains("--model PATH"), "{err}");
}

#[test]
fn generate_runs_a_synthetic_model_and_reports_speed() {
    let out = kiln(&[
        "generate",
        "--model",
        "synthetic:tiny",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "Hello",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("5 prompt tokens, 5 generated (length)"),
        "{err}"
    );
    assert!(err.contains("tokens/s"), "{err}");

    let out = kiln(&[
        "generate",
        "--model",
        "synthetic:tiny",
        "--throughput",
        "4",
        "--max-tokens",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("4 requests in"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn parity_compares_two_devices_and_fails_beyond_the_tolerance() {
    let args = [
        "parity",
        "--device",
        "loopback",
        "--against",
        "cpu",
        "--model",
        "synthetic:tiny:q4_1",
        "--tokens",
        "12",
        "--kv-cache-memory",
        "8MiB",
    ];
    let out = kiln(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for row in [
        "| prefill | 12 |",
        "| decode | 12 |",
        "| greedy batch of 4 |",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    assert!(stdout.contains("kiln parity: ok"), "{stdout}");

    // A tolerance no two backends meet: exit 1 and the failing pass named.
    let mut strict = args.to_vec();
    strict.extend(["--tolerance", "0"]);
    let out = kiln(&strict);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("FAIL"), "{}", text(&out.stdout));

    let out = kiln(&[
        "parity",
        "--device",
        "cpu",
        "--model",
        "synthetic:tiny",
        "--tokens",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn precision_flag_is_checked() {
    let out = kiln(&[
        "generate",
        "--model",
        "synthetic:tiny:q4_0",
        "--precision",
        "int4",
        "Hi",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--precision"),
        "{}",
        text(&out.stderr)
    );
    for mode in ["auto", "exact", "int8"] {
        let out = kiln(&[
            "generate",
            "--model",
            "synthetic:tiny:q4_0",
            "--precision",
            mode,
            "--max-tokens",
            "2",
            "Hi",
        ]);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
    }
}

#[test]
fn generate_refuses_bad_flags_and_impossible_requests() {
    for args in [
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--kv-cache-memory",
            "lots",
            "x",
        ][..],
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--dtype",
            "int3",
            "x",
        ],
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--temperature",
            "-1",
            "x",
        ],
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--max-tokens",
            "100000",
            "x",
        ],
        &["generate", "--model", "synthetic:nope", "x"],
        &["generate", "--model", "synthetic:tiny"],
    ] {
        let out = kiln(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error: "), "{args:?}");
    }
}
