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
