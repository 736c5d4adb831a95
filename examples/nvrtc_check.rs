//! NVRTC compile check of every CUDA kernel, runnable without a GPU.
//!
//! ```text
//! bash scripts/nvrtc-check.sh            # creates a venv with the nvidia-cuda-nvrtc wheel, runs this
//! LD_LIBRARY_PATH=<wheel>/nvidia/cu13/lib cargo run --example nvrtc_check [-- compute_80 compute_90]
//! ```
//!
//! For each architecture (default `compute_80` and `compute_90`) every module in
//! `kernels/` is compiled by NVRTC; the check fails, printing NVRTC's log, on any compile error,
//! and also fails when an entry point registered in `src/backend/kernels.rs` is missing from the
//! PTX. A self-test first checks that a deliberately broken kernel is reported with its file
//! name and line. `-- --resources [sm_90]` prints ptxas' register and spill report per kernel.

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    use ufm::backend::cuda::nvrtc::{compile_module, compile_source};
    use ufm::backend::kernels::MODULES;

    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--resources") {
        // Registers and spills per kernel from ptxas, for the given sm_XX (default sm_90).
        args.remove(i);
        let sm = args.first().cloned().unwrap_or_else(|| "sm_90".into());
        for m in MODULES.iter() {
            match ufm::backend::cuda::nvrtc::resource_usage(m, &sm) {
                Ok(log) => println!("== {} {sm}\n{log}", m.file),
                Err(e) => {
                    eprintln!("FAIL {}:\n{e}", m.file);
                    return ExitCode::FAILURE;
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    let archs: Vec<String> = if args.is_empty() {
        vec!["compute_80".into(), "compute_90".into()]
    } else {
        args
    };
    // Self-test: a syntax error must come back as an error carrying the log with file and line.
    match compile_source(
        "kernels/selftest.cu",
        "extern \"C\" __global__ void broken(float* x) {\n  x[0] = 1.0f\n}\n",
        &archs[0],
    ) {
        Ok(_) => {
            eprintln!("FAIL: NVRTC accepted a kernel with a syntax error");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            let msg = e.to_string();
            if !msg.contains("kernels/selftest.cu(") {
                eprintln!("FAIL: NVRTC error does not name the file and line:\n{msg}");
                return ExitCode::FAILURE;
            }
            println!(
                "self-test: a syntax error is reported as `{}`",
                msg.lines()
                    .find(|l| l.contains("selftest.cu("))
                    .unwrap_or("")
                    .trim()
            );
        }
    }
    let mut failed = false;
    for arch in &archs {
        for m in MODULES.iter() {
            let t = std::time::Instant::now();
            match compile_module(m, arch) {
                Ok(ptx) => {
                    let missing: Vec<&str> = m
                        .entries
                        .iter()
                        .copied()
                        .filter(|e| !ptx.contains(&format!(".entry {e}(")))
                        .collect();
                    if missing.is_empty() {
                        println!(
                            "ok   {:<18} {arch}: {} entry points, {} KiB PTX, {:.1} s",
                            m.file,
                            m.entries.len(),
                            ptx.len() / 1024,
                            t.elapsed().as_secs_f64()
                        );
                    } else {
                        failed = true;
                        eprintln!(
                            "FAIL {} {arch}: entry points missing from the PTX: {missing:?}",
                            m.file
                        );
                    }
                }
                Err(e) => {
                    failed = true;
                    eprintln!("FAIL {} {arch}:\n{e}", m.file);
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        println!("all kernels compile for {}", archs.join(", "));
        ExitCode::SUCCESS
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("nvrtc_check needs the `cuda` feature (on by default)");
    std::process::exit(1);
}
