//! The `blockwise` command line.

#![cfg(feature = "cli")]

use std::process::Command;

fn blockwise() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blockwise"))
}

#[test]
fn bench_noop_json() -> Result<(), Box<dyn std::error::Error>> {
    let out = blockwise()
        .args([
            "bench",
            "noop",
            "--blocks",
            "1000",
            "--workers",
            "2",
            "--dims",
            "3",
            "--json",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0])?;
    // Keys in the documented order.
    assert!(
        lines[0].starts_with(
            r#"{"scenario":"noop","runner":"threads","workers":2,"blocks":1000,"completed":1000,"wall_s":"#
        ),
        "{stdout}"
    );
    assert_eq!(v.as_object().map(serde_json::Map::len), Some(11));
    let bps = lines[0].find(r#","blocks_per_s":"#);
    let rss = lines[0].find(r#","peak_rss_mib":"#);
    assert!(bps.is_some() && rss > bps, "{stdout}");
    assert_eq!(v["scenario"], "noop");
    assert_eq!(v["runner"], "threads");
    assert_eq!(v["workers"], 2);
    assert_eq!(v["blocks"], 1000);
    assert_eq!(v["completed"], 1000);
    assert!(v["wall_s"].as_f64().is_some_and(|w| w > 0.0));
    assert!(v["blocks_per_s"].as_f64().is_some_and(|b| b > 0.0));
    // The keys `bench noop` added last come after the others.
    assert!(
        lines[0].ends_with(r#","context":0,"chain":false,"read_write_conflict":false}"#),
        "{stdout}"
    );
    Ok(())
}

/// `bench noop --context N` and `--chain` on threads and processes, in 1 to 4 dimensions, with
/// several tasks and a run directory: the block counts and the JSON keys.
#[test]
fn bench_noop_context_and_chain_report_their_blocks_and_keys()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-context-chain");
    let _ = std::fs::remove_dir_all(&dir);
    let logs = dir.join("logs").display().to_string();
    // (extra arguments, blocks reported, context, chain)
    let cases: [(&[&str], u64, u64, bool); 11] = [
        (&["--context", "1"], 1000, 1, false),
        (&["--context", "1", "--no-conflicts"], 1000, 1, false),
        (
            &["--chain", "--context", "2", "--no-conflicts"],
            2000,
            2,
            true,
        ),
        (&["--context", "2", "--dims", "1"], 1000, 2, false),
        (
            &["--context", "1", "--dims", "2", "--tasks", "2"],
            1000,
            1,
            false,
        ),
        (&["--context", "3", "--dims", "4"], 1000, 3, false),
        (&["--chain"], 2000, 0, true),
        (&["--chain", "--context", "1"], 2000, 1, true),
        (
            &["--chain", "--context", "1", "--tasks", "4"],
            2000,
            1,
            true,
        ),
        (
            &[
                "--context",
                "1",
                "--runner",
                "processes",
                "--log-dir",
                &logs,
            ],
            1000,
            1,
            false,
        ),
        (
            &[
                "--chain",
                "--context",
                "1",
                "--dims",
                "2",
                "--runner",
                "processes",
                "--log-dir",
                &logs,
            ],
            2000,
            1,
            true,
        ),
    ];
    for (extra, blocks, context, chain) in cases {
        let mut args: Vec<std::ffi::OsString> = ["bench", "noop", "--blocks", "1000", "--json"]
            .iter()
            .map(Into::into)
            .collect();
        args.extend(extra.iter().map(Into::into));
        let out = run_with_timeout(&args, &[])?;
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout)?;
        let v: serde_json::Value = serde_json::from_str(stdout.trim())?;
        let processes = extra.contains(&"processes");
        let runner = if processes { "processes" } else { "threads" };
        assert!(
            stdout.starts_with(&format!(
                r#"{{"scenario":"noop","runner":"{runner}","workers":2,"blocks":{blocks},"completed":{blocks},"#
            )),
            "{extra:?}: {stdout}"
        );
        // Today's keys (`tls` with worker processes) plus `context`, `chain` and
        // `read_write_conflict`.
        assert_eq!(
            v.as_object().map(serde_json::Map::len),
            Some(if processes { 12 } else { 11 }),
            "{extra:?}: {stdout}"
        );
        assert_eq!(v["context"], context, "{extra:?}: {stdout}");
        assert_eq!(v["chain"], chain, "{extra:?}: {stdout}");
        let conflicts = context > 0 && !extra.contains(&"--no-conflicts");
        assert_eq!(v["read_write_conflict"], conflicts, "{extra:?}: {stdout}");
        assert!(v["blocks_per_s"].as_f64().is_some_and(|b| b > 0.0));
    }

    // A chain with context and a run directory: both tasks' markers, all skipped the second
    // time; `status` names both tasks.
    let run_dir = dir.join("run");
    for skipped in [0, 2000] {
        let mut args: Vec<std::ffi::OsString> = [
            "bench",
            "noop",
            "--blocks",
            "1000",
            "--chain",
            "--context",
            "1",
            "--json",
            "--run-dir",
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.push(run_dir.clone().into());
        let out = run_with_timeout(&args, &[])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(v["completed"], 2000);
        assert_eq!(v["skipped"], skipped);
    }
    let out = blockwise()
        .arg("status")
        .arg(&run_dir)
        .arg("--json")
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut tasks: Vec<(String, u64)> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap_or_default().to_owned(),
                t["done"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        [("noop_down".to_owned(), 1000), ("noop_up".to_owned(), 1000)]
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bench_noop_splits_blocks_over_tasks_sharing_a_budget() -> Result<(), Box<dyn std::error::Error>>
{
    let out = blockwise()
        .args([
            "bench",
            "noop",
            "--blocks",
            "300",
            "--dims",
            "1",
            "--tasks",
            "3",
            "--budget-cpus",
            "2",
            "--json",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["completed"], 300);
    let bad = blockwise()
        .args(["bench", "noop", "--blocks", "301", "--tasks", "3"])
        .output()?;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a multiple of --tasks 3"), "{err}");
    Ok(())
}

#[test]
fn bench_noop_text() -> Result<(), Box<dyn std::error::Error>> {
    let out = blockwise()
        .args(["bench", "noop", "--blocks", "97", "--dims", "2"])
        .output()?;
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        stdout.starts_with("97 blocks (97 completed) on 2 threads workers in "),
        "{stdout}"
    );
    assert!(stdout.contains(" blocks/s, peak RSS "), "{stdout}");
    Ok(())
}

#[test]
fn bad_arguments_exit_2_with_a_message() -> Result<(), Box<dyn std::error::Error>> {
    for args in [
        &["bench", "noop", "--workers", "0"][..],
        &["bench", "noop", "--blocks", "0"][..],
        &["bench", "noop", "--dims", "9"][..],
        &["bench", "noop", "--context", "17"][..],
        &["bench", "noop", "--context=-1"][..],
        &["bench", "noop", "--chain=yes"][..],
        &["bench", "noop", "--no-conflicts"][..],
        &[
            "bench", "zarr", "--input", "a", "--output", "b", "--runner", "gpus",
        ][..],
        &["bench", "nothing"][..],
    ] {
        let out = blockwise().args(args).output()?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    Ok(())
}

/// `sample` then `bench zarr`: the blockwise box mean equals the box mean of the whole
/// zero-padded volume, computed here in one piece (the volume is not a multiple of the chunk,
/// so boundary blocks are shrunk).
#[cfg(feature = "zarr")]
#[test]
fn sample_then_bench_zarr_matches_the_whole_volume_result() -> Result<(), Box<dyn std::error::Error>>
{
    use blockwise::sample::SampleSpec;
    use blockwise::workload::box_mean_3x3x3;
    use sha2::Digest;

    let dir = std::env::temp_dir().join(format!("blockwise-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (input, output) = (dir.join("in.zarr"), dir.join("out.zarr"));
    let out = blockwise()
        .args([
            "sample", "--size", "40", "--chunk", "16", "--seed", "7", "--output",
        ])
        .arg(&input)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = blockwise()
        .args([
            "bench",
            "zarr",
            "--workers",
            "2",
            "--context",
            "3",
            "--json",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout)?.trim())?;
    assert_eq!(v["scenario"], "zarr");
    // 40³ in 16³ chunks: 3 blocks per axis, the last ones shrunk to 8.
    assert_eq!(v["blocks"], 27);
    assert_eq!(v["completed"], 27);
    assert!(v["mb_per_s"].as_f64().is_some_and(|m| m > 0.0));

    let mut spec = SampleSpec::cube(40);
    spec.seed = 7;
    let volume = spec.generate(&spec.roi());
    let mut padded = vec![0u8; 42 * 42 * 42];
    for z in 0..40 {
        for y in 0..40 {
            let src = (z * 40 + y) * 40;
            let dst = ((z + 1) * 42 + y + 1) * 42 + 1;
            padded[dst..dst + 40].copy_from_slice(&volume[src..src + 40]);
        }
    }
    let expected = box_mean_3x3x3(&padded, [42, 42, 42]);
    let sha: String = sha2::Sha256::digest(&expected)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["output_sha256"], sha);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `bench zarr --runner processes`: worker processes reopen the arrays and run the same box
/// mean; the output is byte for byte the threads run's (every chunk file; the metadata differs
/// only in the array's random id), with and without `--codec-only`.
#[cfg(feature = "zarr")]
#[test]
fn bench_zarr_on_worker_processes_writes_what_threads_write()
-> Result<(), Box<dyn std::error::Error>> {
    use std::ffi::OsString;

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-zarr-processes");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("in.zarr");
    let mut args: Vec<OsString> = ["sample", "--size", "40", "--chunk", "16", "--seed", "3"]
        .map(OsString::from)
        .into();
    args.extend(["--output".into(), input.clone().into()]);
    let out = run_with_timeout(&args, &[])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chunks = |store: &std::path::Path| {
        snapshot(store)
            .into_iter()
            .filter(|(p, _)| p.file_name().is_some_and(|n| n != "zarr.json"))
            .map(|(p, bytes)| (p.strip_prefix(store).map(|p| p.to_owned()), bytes))
            .collect::<Vec<_>>()
    };
    for extra in [&["--context", "2"][..], &["--codec-only"][..]] {
        let mut reports = Vec::new();
        for runner in ["threads", "processes"] {
            let output = dir.join(format!("{runner}.zarr"));
            let mut args: Vec<OsString> = ["bench", "zarr", "--json", "--runner", runner]
                .map(OsString::from)
                .into();
            args.extend(extra.iter().map(OsString::from));
            args.extend([
                "--input".into(),
                input.clone().into(),
                "--output".into(),
                output.clone().into(),
                "--log-dir".into(),
                dir.join("logs").into(),
            ]);
            let out = run_with_timeout(&args, &[])?;
            assert!(
                out.status.success(),
                "{runner} {extra:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(v["runner"], runner);
            assert_eq!(v["blocks"], 27);
            assert_eq!(v["completed"], 27);
            assert_eq!(v["tls"].as_bool(), (runner == "processes").then_some(false));
            assert!(v["mb_per_s"].as_f64().is_some_and(|m| m > 0.0));
            reports.push((v["output_sha256"].clone(), chunks(&output)));
        }
        assert!(
            reports[0].1.len() >= 27,
            "{extra:?}: {} chunk files",
            reports[0].1.len()
        );
        assert_eq!(reports[0].0, reports[1].0, "{extra:?}: output sha256");
        assert!(
            reports[0].1 == reports[1].1,
            "{extra:?}: chunk files differ"
        );
    }
    // The blocks ran in the worker processes, which logged nothing alarming.
    let err = std::fs::read_to_string(dir.join("logs/box_mean/worker_0.err"))?;
    assert!(!err.contains("error"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn bench_noop_with_a_run_dir_skips_everything_the_second_time_and_status_shows_it()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-run-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let run = |blocks: &str, extra: &[&str]| {
        blockwise()
            .args(["bench", "noop", "--blocks", blocks, "--json", "--run-dir"])
            .arg(&dir)
            .args(extra)
            .output()
    };
    for skipped in [0, 5000] {
        let out = run("5000", &[])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout)?;
        assert!(
            stdout.contains(&format!(
                r#""completed":5000,"skipped":{skipped},"wall_s":"#
            )),
            "{stdout}"
        );
    }
    // Another layout in the same directory is refused; --fresh starts over.
    let out = run("6000", &[])?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("holds done-markers for a different block layout (total ROI"),
        "{stderr}"
    );
    let out = run("6000", &["--fresh"])?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.contains(r#""skipped":0,"#));

    let out = blockwise().arg("status").arg(&dir).output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("last run: finished (started "), "{text}");
    assert!(text.contains("\nlast progress: "), "{text}");
    assert!(
        text.contains("task         total          done        failed     never run\nnoop          6000          6000             0             0\n"),
        "{text}"
    );
    let out = blockwise().arg("status").arg(&dir).arg("--json").output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["state"], "finished");
    assert_eq!(v["tasks"][0]["task_id"], "noop");
    assert_eq!(v["tasks"][0]["done"], 6000);
    assert_eq!(v["tasks"][0]["never_run"], 0);
    assert!(v["last_progress"].as_u64().is_some());

    let out = blockwise().args(["status", "/nonexistent/run"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr)?,
        "error: /nonexistent/run is not a blockwise run directory (it has no run.json)\n"
    );
    Ok(())
}

/// Runs the binary with `args` (and `env`), killing it after 30 s: a hang fails the test
/// instead of blocking it.
fn run_with_timeout(
    args: &[std::ffi::OsString],
    env: &[(&str, &str)],
) -> Result<std::process::Output, Box<dyn std::error::Error>> {
    let mut cmd = blockwise();
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => Ok(out?),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
            Err(format!("blockwise {args:?} did not finish within 30 s").into())
        }
    }
}

/// Every file under `dir` with its contents, for "nothing changed" checks.
#[cfg(feature = "zarr")]
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Bad input to every subcommand: exit code 1 or 2 (never a panic, an abort or a signal),
/// stderr naming the problem, nothing written where it should not be, and no hang.
#[cfg(feature = "zarr")]
#[test]
fn bad_input_to_every_subcommand_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
    use blockwise::Roi;
    use blockwise::store::{ArraySpec, DataType, ZarrArray};
    use std::ffi::OsString;

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-bad-input");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let p = |name: &str| dir.join(name);
    let input = p("in.zarr");
    let out = run_with_timeout(
        &["sample", "--size", "8", "--chunk", "4", "--output"]
            .map(OsString::from)
            .into_iter()
            .chain([input.clone().into()])
            .collect::<Vec<_>>(),
        &[],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_timeout(
        &["sample", "--size", "32", "--chunk", "4", "--output"]
            .map(OsString::from)
            .into_iter()
            .chain([p("wide.zarr").into()])
            .collect::<Vec<_>>(),
        &[],
    )?;
    assert!(out.status.success());
    std::os::unix::fs::symlink(&input, p("link.zarr"))?;
    std::fs::write(p("afile"), b"not a store")?;
    let victim = p("victim.zarr");
    let out = run_with_timeout(
        &["sample", "--size", "8", "--output"]
            .map(OsString::from)
            .into_iter()
            .chain([victim.clone().into()])
            .collect::<Vec<_>>(),
        &[],
    )?;
    assert!(out.status.success());
    let array = |name: &str, shape: i64, dtype, chunk: u64, dims: usize| {
        let spec = ArraySpec::new(
            Roi::new(vec![0i64; dims], vec![shape; dims]),
            vec![1i64; dims],
            dtype,
            vec![chunk; dims],
        );
        ZarrArray::create(p(name), "raw", &spec).map(|_| ())
    };
    array("flat.zarr", 8, DataType::U8, 4, 2)?;
    array("float.zarr", 8, DataType::F32, 4, 3)?;
    array("hugechunk.zarr", 8, DataType::U8, 1 << 16, 3)?;
    std::fs::create_dir_all(p("rd-damaged"))?;
    std::fs::write(p("rd-damaged/run.json"), b"garbage")?;
    let before = snapshot(&dir);

    let zarr = |input: &str, output: &str, extra: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = ["bench", "zarr", "--input"].map(OsString::from).into();
        v.push(p(input).into());
        v.push("--output".into());
        v.push(if output.starts_with('/') {
            output.into()
        } else {
            p(output).into()
        });
        v.extend(extra.iter().map(OsString::from));
        v
    };
    let plain = |args: &[&str]| -> Vec<OsString> { args.iter().map(OsString::from).collect() };
    let with = |args: &[&str], path: &str| -> Vec<OsString> {
        let mut v = plain(args);
        v.push(p(path).into());
        v
    };
    let dir_s = dir.display().to_string();
    // (arguments, what stderr must say, paths that must not exist afterwards)
    let cases: Vec<(Vec<OsString>, &str, Vec<&str>)> = vec![
        // bench zarr
        (
            zarr("in.zarr", "in.zarr", &[]),
            "are the same store",
            vec![],
        ),
        (
            zarr("in.zarr", "x/../in.zarr", &[]),
            "are the same store",
            vec!["x"],
        ),
        (
            zarr("link.zarr", "in.zarr", &[]),
            "are the same store",
            vec![],
        ),
        (
            zarr("in.zarr", "in.zarr/out", &[]),
            "is inside --input",
            vec!["in.zarr/out"],
        ),
        (
            zarr("in.zarr", &dir_s, &[]),
            "is inside --output",
            vec!["raw"],
        ),
        (
            zarr("missing.zarr", "o1.zarr", &[]),
            "missing.zarr",
            vec!["o1.zarr"],
        ),
        (
            zarr("flat.zarr", "o2.zarr", &[]),
            "expected a 3D uint8 array",
            vec!["o2.zarr"],
        ),
        (
            zarr("float.zarr", "o3.zarr", &[]),
            "expected a 3D uint8 array",
            vec!["o3.zarr"],
        ),
        (
            zarr("hugechunk.zarr", "o4.zarr", &[]),
            "of memory",
            vec!["o4.zarr"],
        ),
        (
            // 512 blocks at once, each reading 2052³ voxels: terabytes
            zarr(
                "wide.zarr",
                "o5.zarr",
                &["--context", "1024", "--workers", "4096"],
            ),
            "of memory",
            vec!["o5.zarr"],
        ),
        (
            zarr("in.zarr", "o6.zarr", &["--context", "0"]),
            "--context",
            vec!["o6.zarr"],
        ),
        (
            zarr("in.zarr", "o7.zarr", &["--workers", "0"]),
            "--workers",
            vec!["o7.zarr"],
        ),
        (
            zarr("in.zarr", "o8.zarr", &["--dataset", "../../escape"]),
            "dataset \"../../escape\"",
            vec!["o8.zarr", "../escape"],
        ),
        (zarr("in.zarr", "afile", &[]), "afile", vec![]),
        // bench noop
        (
            plain(&["bench", "noop", "--blocks", "1000000000001"]),
            "--blocks",
            vec![],
        ),
        (
            plain(&["bench", "noop", "--blocks", "18446744073709551557"]),
            "--blocks",
            vec![],
        ),
        (plain(&["bench", "noop", "--blocks=-5"]), "--blocks", vec![]),
        (plain(&["bench", "noop", "--dims", "0"]), "--dims", vec![]),
        (plain(&["bench", "noop", "--dims", "100"]), "--dims", vec![]),
        (
            plain(&["bench", "noop", "--prefetch", "0"]),
            "--prefetch",
            vec![],
        ),
        (plain(&["bench", "noop", "--fresh"]), "--run-dir", vec![]),
        (
            plain(&["bench", "noop", "--context", "100"]),
            "--context",
            vec![],
        ),
        (
            zarr("in.zarr", "o9.zarr", &["--runner", "gpus"]),
            "--runner",
            vec!["o9.zarr"],
        ),
        (
            with(&["bench", "noop", "--blocks", "10", "--run-dir"], "afile"),
            "afile",
            vec![],
        ),
        (
            with(
                &[
                    "bench",
                    "noop",
                    "--blocks",
                    "10",
                    "--runner",
                    "processes",
                    "--workers",
                    "1",
                    "--log-dir",
                ],
                "afile",
            ),
            "afile",
            vec![],
        ),
        // status
        (
            with(&["status"], "afile"),
            "not a blockwise run directory",
            vec![],
        ),
        (
            with(&["status"], "nothing-here"),
            "not a blockwise run directory",
            vec![],
        ),
        (with(&["status"], "rd-damaged"), "is damaged", vec![]),
        // sample
        (
            with(
                &["sample", "--size", "65536", "--codec", "none", "--output"],
                "s1.zarr",
            ),
            "needs",
            vec!["s1.zarr"],
        ),
        (
            with(&["sample", "--size", "65536", "--output"], "s2.zarr"),
            "even compressed",
            vec!["s2.zarr"],
        ),
        (
            with(&["sample", "--size", "0", "--output"], "s3.zarr"),
            "--size",
            vec!["s3.zarr"],
        ),
        (
            with(&["sample", "--size", "65537", "--output"], "s4.zarr"),
            "--size",
            vec!["s4.zarr"],
        ),
        (
            with(&["sample", "--chunk", "0", "--output"], "s5.zarr"),
            "--chunk",
            vec!["s5.zarr"],
        ),
        (
            with(
                &[
                    "sample", "--size", "8", "--chunk", "4", "--shard", "6", "--output",
                ],
                "s6.zarr",
            ),
            "--shard 6 is not a multiple of --chunk 4",
            vec!["s6.zarr"],
        ),
        (
            with(
                &[
                    "sample", "--size", "8", "--chunk", "4", "--shard", "8", "--format", "v2",
                    "--output",
                ],
                "s7.zarr",
            ),
            "needs --format v3",
            vec!["s7.zarr"],
        ),
        (
            with(
                &[
                    "sample",
                    "--size",
                    "8",
                    "--overwrite",
                    "--dataset",
                    "../victim.zarr/raw",
                    "--output",
                ],
                "s8.zarr",
            ),
            "dataset \"../victim.zarr/raw\"",
            vec!["s8.zarr"],
        ),
        (
            with(&["sample", "--size", "8", "--output"], "in.zarr"),
            "already exists",
            vec![],
        ),
        (
            with(&["sample", "--size", "8", "--output"], "afile"),
            "afile",
            vec![],
        ),
        (
            with(&["sample", "--workers", "0", "--output"], "s9.zarr"),
            "--workers",
            vec!["s9.zarr"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, needle, absent) in &cases {
        let out = match run_with_timeout(args, &[]) {
            Ok(out) => out,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !matches!(out.status.code(), Some(1 | 2))
            || !stderr.contains(needle)
            || stderr.contains("panicked")
        {
            failures.push(format!("{args:?}: {:?}, stderr {stderr:?}", out.status));
        }
        for a in absent {
            if p(a).exists() {
                failures.push(format!("{args:?} created {a}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        snapshot(&dir) == before,
        "a refused command changed the directory"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A chunk larger than the volume is clamped to it (with a note) instead of allocating the
/// whole chunk (`--chunk 65536` of an 8³ volume used to abort allocating 256 TiB).
#[cfg(feature = "zarr")]
#[test]
fn sample_clamps_a_chunk_larger_than_the_volume() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-sample-clamp");
    let _ = std::fs::remove_dir_all(&dir);
    let args: Vec<std::ffi::OsString> = [
        "sample", "--size", "8", "--chunk", "65536", "--shard", "131072", "--output",
    ]
    .iter()
    .map(Into::into)
    .chain([dir.clone().into()])
    .collect();
    let out = run_with_timeout(&args, &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    assert!(
        stderr.contains(
            "note: --chunk 65536 is larger than the volume (--size 8); using chunks of 8"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("using shards of 8"), "{stderr}");
    let array = blockwise::store::ZarrArray::open(&dir, "raw")?;
    assert_eq!(array.write_chunk_shape(), [8, 8, 8]);
    let spec = blockwise::sample::SampleSpec::cube(8);
    assert_eq!(
        array
            .read::<u8>(&array.roi())?
            .into_inner()
            .into_raw_vec_and_offset()
            .0,
        spec.generate(&spec.roi())
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The binary logs the library's tracing events to stderr: warnings by default, info with
/// `-v`, debug with `-vv`, or as `RUST_LOG` says; worker processes log to their `.err` files.
#[test]
fn logs_follow_verbosity_and_rust_log() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-logging");
    let _ = std::fs::remove_dir_all(&dir);
    let serving = "scheduler serving workers";
    let listening = "scheduler listening";
    // (flags, RUST_LOG, lines expected on stderr, lines that must not appear)
    type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a [&'a str], &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        (&[], None, &[], &[serving, listening]),
        (&["-v"], None, &[serving, " INFO "], &[listening]),
        (&["-vv"], None, &[serving, listening, " DEBUG "], &[]),
        (&[], Some("blockwise=debug"), &[serving, listening], &[]),
        (&["-vv"], Some("error"), &[], &[serving, listening]),
    ];
    for (i, (flags, rust_log, present, absent)) in cases.iter().enumerate() {
        let logs = dir.join(format!("logs{i}"));
        let mut args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
        args.extend(
            [
                "bench",
                "noop",
                "--runner",
                "processes",
                "--workers",
                "1",
                "--blocks",
                "10",
                "--log-dir",
            ]
            .iter()
            .map(Into::into),
        );
        args.push(logs.clone().into());
        let env: Vec<(&str, &str)> = rust_log.iter().map(|v| ("RUST_LOG", *v)).collect();
        let out = run_with_timeout(&args, &env)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("10 blocks (10 completed)"));
        for p in *present {
            assert!(
                stderr.contains(p),
                "{args:?} RUST_LOG={rust_log:?}: no {p:?} in {stderr:?}"
            );
        }
        for a in *absent {
            assert!(
                !stderr.contains(a),
                "{args:?} RUST_LOG={rust_log:?}: {a:?} in {stderr:?}"
            );
        }
        assert!(!stderr.contains('\x1b'), "no colours on a pipe: {stderr:?}");
        // The worker re-executes the same arguments in the same environment: its own info
        // lines land in its stderr log file exactly when the scheduler's do on stderr.
        let worker = std::fs::read_to_string(logs.join("noop/worker_0.err"))?;
        assert_eq!(
            worker.contains("worker done"),
            present.contains(&serving),
            "{args:?}: worker log {worker:?}"
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(feature = "zarr")]
#[test]
fn pyramid_builds_levels_and_a_rerun_resumes() -> Result<(), Box<dyn std::error::Error>> {
    use blockwise::Roi;
    use blockwise::store::{ArraySpec, DataType, ZarrArray};
    let dir = crate::support::empty_dir("cli", "pyramid");
    let spec = ArraySpec::new(
        Roi::new([0, 0, 0], [20, 16, 16]),
        [1, 1, 1],
        DataType::U8,
        vec![8; 3],
    );
    let raw = ZarrArray::create(dir.join("in.zarr"), "raw", &spec)?;
    let data = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[20, 16, 16]), |i| {
        (i[0] + i[1] + i[2]) as u8
    });
    raw.write(&raw.roi(), data.view())?;
    let out = dir.join("out.zarr");
    let run = |extra: &[&str]| {
        blockwise()
            .arg("pyramid")
            .arg(dir.join("in.zarr/raw"))
            .arg(&out)
            .args([
                "--levels",
                "3",
                "--factor",
                "1,2,2",
                "--method",
                "max",
                "--workers",
                "2",
            ])
            .arg("--run-dir")
            .arg(dir.join("run"))
            .args(extra)
            .output()
    };
    let first = run(&[])?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let s2 = ZarrArray::open(&out, "s2")?;
    assert_eq!(s2.shape(), &[20, 4, 4]);
    let got = s2.read::<u8>(&s2.roi())?;
    // max over y, x in 4x4 windows at z: z + 3 + 3 + 4 * (y + x)
    assert_eq!(got[[0, 0, 0]], 6);
    assert_eq!(got[[5, 1, 2]], 5 + 7 + 11);
    let again = run(&[])?;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let bad = blockwise()
        .args(["pyramid", "nowhere.zarr", "out.zarr", "--method", "median"])
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown downsampling method"));
    Ok(())
}

#[test]
fn bench_markers_json_and_the_run_directory_it_keeps() -> Result<(), Box<dyn std::error::Error>> {
    let dir = crate::support::empty_dir("cli", "bench-markers").join("run");
    let out = blockwise()
        .args(["bench", "markers", "--blocks", "100001", "--keep", "--dir"])
        .arg(&dir)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["blocks"], 100_001);
    assert_eq!(v["chunk_files"], 1);
    // 2 bits per block.
    assert_eq!(v["largest_chunk_bytes"], 25_001);
    for key in [
        "create_s",
        "mark_all_s",
        "status_s",
        "reopen_s",
        "downstream_start_s",
        "rerun_s",
    ] {
        assert!(v[key].as_f64().is_some_and(|s| s >= 0.0), "{key}: {v}");
    }
    // The rerun skipped the finished task (the bench fails otherwise) and ran 1,000
    // downstream blocks, recorded in the kept directory beside every marker block done.
    assert_eq!(v["downstream_blocks"], 1000);
    let status = blockwise().args(["status", "--json"]).arg(&dir).output()?;
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let done = |id: &str| {
        s["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["task_id"] == id))
            .map(|t| t["done"].clone())
    };
    assert_eq!(done("markers"), Some(serde_json::json!(100_001)), "{s}");
    assert_eq!(done("downstream"), Some(serde_json::json!(1000)), "{s}");
    // An existing directory is refused.
    let again = blockwise()
        .args(["bench", "markers", "--blocks", "10", "--dir"])
        .arg(&dir)
        .output()?;
    assert_eq!(again.status.code(), Some(2));
    // Without the downstream task, its keys are absent.
    let bare = blockwise()
        .args(["bench", "markers", "--blocks", "10", "--downstream", "0"])
        .output()?;
    assert!(bare.status.success());
    let b: serde_json::Value = serde_json::from_slice(&bare.stdout)?;
    assert!(b.get("rerun_s").is_none() && b["blocks"] == 10, "{b}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    Ok(())
}
