//! `kiln quantize` and `kiln perplexity` end to end on a synthetic model:
//! every written checkpoint loads, decodes exactly to what the quantiser
//! computed, and runs.

use std::path::Path;
use std::process::{Command, Output};

use kiln::model::{Checkpoint, HostWeight};
use kiln::quantize::host_model::{HostModel, Proj};
use kiln::quantize::rtn::{self, IntQuant};
use kiln::quantize::{quantize, read_quantization_config, Method, Options};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. \
    Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump! \
    Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.";

fn kiln(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("could not run kiln {args:?}: {e}"),
    }
}

fn ok(out: &Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{o}\n{e}");
    format!("{o}{e}")
}

fn source() -> Checkpoint {
    Checkpoint::open(Path::new("synthetic:tiny")).unwrap()
}

/// The quantised weight of layer 0's `p` as loaded back from `dir`.
fn loaded(dir: &Path, p: Proj) -> hal::QuantWeights {
    let ck = Checkpoint::open(dir).unwrap();
    match ck
        .source
        .require(&format!("{}.weight", p.hf_base(0)))
        .unwrap()
    {
        HostWeight::Quant(q) => q,
        other => panic!("{p:?} loaded dense: {other:?}"),
    }
}

#[test]
fn round_to_nearest_checkpoints_load_back_exactly() {
    let src = source();
    let host = HostModel::read(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (method, bits) in [
        (Method::Gptq, 4),
        (Method::Gptq, 8),
        (Method::Awq, 4),
        (Method::Fp8, 8),
    ] {
        let dir = tmp.path().join(format!("{method:?}-{bits}"));
        let opts = Options {
            method,
            bits,
            ..Options::default()
        };
        let report = quantize(&src, &opts, None, &dir).unwrap();
        assert!(report.bytes > 0);
        let cfg = read_quantization_config(&dir).unwrap();
        for p in Proj::ALL {
            let w = host.linear(0, p).unwrap();
            let want = match method {
                Method::Gptq => IntQuant::rtn(w, bits, 64, false, 1).to_gptq(),
                Method::Awq => IntQuant::rtn(w, 4, 64, false, 0).to_awq(),
                _ => rtn::fp8(w, hal::ActivationScale::DynamicPerTensor, None),
            };
            let got = loaded(&dir, p);
            assert_eq!(got.spec(), want.spec(), "{method:?} {p:?} ({cfg})");
            assert_eq!(got.dequantize(), want.dequantize(), "{method:?} {p:?}");
        }
    }
}

#[test]
fn gguf_outputs_keep_metadata_and_requantise_every_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source();
    for (method, ty) in [
        (Method::Q8_0, hal::GgufType::Q8_0),
        (Method::Q4_0, hal::GgufType::Q4_0),
    ] {
        let out = tmp.path().join(format!("{method:?}.gguf"));
        let opts = Options {
            method,
            ..Options::default()
        };
        quantize(&src, &opts, None, &out).unwrap();
        let ck = Checkpoint::open(&out).unwrap();
        assert_eq!(ck.config, src.config);
        let name = "blk.0.ffn_down.weight";
        let HostWeight::Quant(q) = ck.source.require(name).unwrap() else {
            panic!("dense {name}")
        };
        assert_eq!(q.spec(), hal::QuantSpec::Gguf(ty));
        let HostWeight::Quant(orig) = src.source.require(name).unwrap() else {
            panic!("dense source")
        };
        let m = kiln::quantize::linalg::Mat::new(
            orig.n(),
            orig.k(),
            orig.dequantize().iter().map(|&v| v as f32).collect(),
        );
        assert_eq!(q, rtn::gguf(&m, ty).unwrap());
    }
    let err = quantize(
        &src,
        &Options {
            method: Method::Awq,
            group_size: Some(48),
            ..Options::default()
        },
        None,
        &tmp.path().join("bad"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not divide"), "{err}");
}

#[test]
fn quantize_and_perplexity_commands_run_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let cal = tmp.path().join("cal.txt");
    std::fs::write(&cal, TEXT).unwrap();
    let cal = cal.to_str().unwrap();
    let mut ppl = Vec::new();
    for (name, extra) in [
        ("gptq", vec!["--method", "gptq", "--calibration", cal]),
        ("awq", vec!["--method", "awq", "--calibration", cal]),
        (
            "fp8",
            vec![
                "--method",
                "fp8",
                "--activation-scheme",
                "static",
                "--calibration",
                cal,
            ],
        ),
        ("q4.gguf", vec!["--method", "q4_0"]),
        ("f32", vec!["--method", "f32"]),
    ] {
        let out = tmp.path().join(name);
        let out = out.to_str().unwrap();
        let mut args = vec!["quantize", "--model", "synthetic:tiny", "--out", out];
        args.extend(extra);
        let log = ok(&kiln(&args));
        assert!(log.contains("kiln quantize: "), "{log}");
        if name != "q4.gguf" && name != "f32" {
            assert!(log.contains("calibration: "), "{log}");
        }
        ok(&kiln(&[
            "generate",
            "--model",
            out,
            "--max-tokens",
            "4",
            "hello",
        ]));
        let p = ok(&kiln(&[
            "perplexity",
            "--model",
            out,
            "--text",
            cal,
            "--window",
            "32",
            "--stride",
            "16",
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_str(p.lines().next().unwrap()).unwrap();
        let x = v["perplexity"].as_f64().unwrap();
        assert!(x.is_finite() && x > 1.0, "{name}: {v}");
        ppl.push(x);
    }
    // Bad requests exit 2 with a reason.
    for (args, why) in [
        (
            vec![
                "quantize",
                "--model",
                "synthetic:tiny",
                "--method",
                "int3",
                "--out",
                "x",
            ],
            "unknown method",
        ),
        (
            vec![
                "quantize",
                "--model",
                "synthetic:tiny",
                "--method",
                "fp8",
                "--activation-scheme",
                "static",
                "--out",
                "x",
            ],
            "calibration",
        ),
        (
            vec![
                "perplexity",
                "--model",
                "synthetic:tiny",
                "--text",
                cal,
                "--stride",
                "0",
            ],
            "--stride",
        ),
        (
            vec![
                "perplexity",
                "--model",
                "synthetic:tiny",
                "--text",
                "/no/such/file",
            ],
            "/no/such/file",
        ),
    ] {
        let out = kiln(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(ppl.len(), 5);
}
