//! NVRTC: compiling `kernels/*.cu` to PTX at run time, once per process per architecture.

use crate::backend::kernels::KernelModule;
use crate::error::{Error, Result};
use cudarc::nvrtc::{CompileError, CompileOptions};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Whether `libnvrtc.so.13` can be loaded (never panics).
pub fn nvrtc_present() -> bool {
    // SAFETY: only probes the dynamic loader for the library; no NVRTC call is made.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// The error for a missing NVRTC.
pub fn nvrtc_missing() -> Error {
    Error::CudaUnavailable(
        "NVRTC (libnvrtc.so.13, CUDA 13) was not found by the dynamic loader: install the CUDA 13 \
         toolkit, or `pip install 'nvidia-cuda-nvrtc==13.0.*'` and add its nvidia/cu13/lib folder \
         to LD_LIBRARY_PATH (see scripts/nvrtc-check.sh)"
            .into(),
    )
}

fn ptx_cache() -> &'static Mutex<HashMap<(&'static str, String), String>> {
    static CACHE: OnceLock<Mutex<HashMap<(&'static str, String), String>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Compiles `module` for `arch` (e.g. `"compute_90"`) and returns the PTX text. The result is
/// cached for the life of the process. A compile failure returns [`Error::Cuda`] whose reason
/// carries NVRTC's log (lines read `kernels/ufm.cu(42): error: ...`).
pub fn compile_module(module: &KernelModule, arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(nvrtc_missing());
    }
    let key = (module.file, arch.to_string());
    if let Some(ptx) = ptx_cache().lock().map_err(poisoned)?.get(&key) {
        return Ok(ptx.clone());
    }
    let ptx = compile_source(module.file, &module.full_source(), arch)?;
    ptx_cache()
        .lock()
        .map_err(poisoned)?
        .insert(key, ptx.clone());
    Ok(ptx)
}

/// Compiles CUDA C `source` under the program name `name` for `arch`, uncached. Used by
/// [`compile_module`] and by the NVRTC check's self-test.
pub fn compile_source(name: &str, source: &str, arch: &str) -> Result<String> {
    if !nvrtc_present() {
        return Err(nvrtc_missing());
    }
    if source.contains('\0') {
        return Err(Error::Cuda {
            context: name.into(),
            reason: "source contains a NUL byte".into(),
        });
    }
    let opts = CompileOptions {
        name: Some(name.to_string()),
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "--fmad=true".into(),
        ],
        ..Default::default()
    };
    let src = source.to_string();
    let res = std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(src, opts))
        .map_err(|_| Error::CudaUnavailable(format!(
            "NVRTC panicked while compiling {name} (library incomplete? libnvrtc-builtins.so.13 must be next to libnvrtc.so.13)"
        )))?;
    match res {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { nvrtc, log, .. }) => Err(Error::Cuda {
            context: format!("NVRTC compile of {name} for {arch}"),
            reason: format!("{nvrtc:?}\n{}", log.to_string_lossy()),
        }),
        Err(e) => Err(Error::Cuda {
            context: format!("NVRTC compile of {name} for {arch}"),
            reason: format!("{e:?}"),
        }),
    }
}

fn poisoned<E>(_: E) -> Error {
    Error::Cuda {
        context: "PTX cache".into(),
        reason: "a thread panicked while holding the cache lock".into(),
    }
}

/// Compiles `module` to machine code for `sm_arch` (e.g. `"sm_90"`) with `ptxas -v` and
/// returns NVRTC's log: per kernel, the registers used and any spill stores/loads. Needs no
/// GPU; used by `cargo run --example nvrtc_check -- --resources`.
pub fn resource_usage(module: &KernelModule, sm_arch: &str) -> Result<String> {
    use cudarc::nvrtc::result;
    use std::ffi::CString;
    if !nvrtc_present() {
        return Err(nvrtc_missing());
    }
    let err = |what: &str, e: result::NvrtcError| Error::Cuda {
        context: format!("NVRTC {what} of {} for {sm_arch}", module.file),
        reason: format!("{e:?}"),
    };
    let src = CString::new(module.full_source()).map_err(|_| Error::Cuda {
        context: module.file.into(),
        reason: "source contains a NUL byte".into(),
    })?;
    let name = CString::new(module.file).expect("file names have no NUL");
    let opts = vec![
        format!("--gpu-architecture={sm_arch}"),
        "--std=c++17".to_string(),
        "--fmad=true".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err("create", e))?;
    // SAFETY: `prog` was just created and is destroyed once below; the log buffer is a
    // NUL-terminated C string owned by the returned Vec.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let log = unsafe { result::get_program_log(prog) }.map_err(|e| err("log", e));
    let _ = unsafe { result::destroy_program(prog) };
    let log = log?;
    let bytes: Vec<u8> = log
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    compiled.map_err(|e| Error::Cuda {
        context: format!("NVRTC compile of {} for {sm_arch}", module.file),
        reason: format!("{e:?}\n{text}"),
    })?;
    Ok(text)
}
