//! The `blockwise` command line.

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
    assert_eq!(v.as_object().map(serde_json::Map::len), Some(8));
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
