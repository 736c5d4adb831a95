//! Kernel manifest: every entry point the Rust side names (the registry in
//! `src/backend/kernels.rs` and the name builders the launches use) exists in `kernels/*.cu`,
//! every entry point in `kernels/*.cu` is registered, and `kernels/README.md` lists each one.
//! Runs without a GPU and without NVRTC (the NVRTC compile check is `scripts/nvrtc-check.sh`).

use std::collections::BTreeSet;
use std::path::Path;
use ufm::backend::kernels::{all_named_entries, MODULES};

/// Entry points defined in CUDA source: `extern "C" __global__ void NAME(` outside macro
/// definitions, and `SOME_ENTRY(NAME, ...)` macro instantiations.
fn defined_entries(src: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut in_define = false;
    for line in src.lines() {
        let t = line.trim_start();
        let starts_define = t.starts_with("#define");
        if in_define || starts_define {
            in_define = line.trim_end().ends_with('\\');
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        if let Some(rest) = t.split("extern \"C\" __global__ void ").nth(1) {
            let rest = rest.trim_start_matches("__launch_bounds__(256) ");
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
        if let Some(open) = t.find("_ENTRY(") {
            let head = &t[..open];
            if head.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                let name = ident(&t[open + "_ENTRY(".len()..]);
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn every_registered_entry_point_is_defined_and_vice_versa() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut registered_all = BTreeSet::new();
    for m in MODULES.iter() {
        // The embedded text is the file on disk.
        let disk = std::fs::read_to_string(root.join(m.file)).unwrap();
        assert_eq!(
            disk, m.source,
            "{} embedded text differs from the file",
            m.file
        );
        let defined = defined_entries(m.source);
        let registered: BTreeSet<String> = m.entries.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            registered.len(),
            m.entries.len(),
            "{}: duplicate registrations",
            m.file
        );
        let missing: Vec<_> = registered.difference(&defined).collect();
        let unregistered: Vec<_> = defined.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "{}: registered but not defined: {missing:?}",
            m.file
        );
        assert!(
            unregistered.is_empty(),
            "{}: defined but not registered: {unregistered:?}",
            m.file
        );
        for e in m.entries {
            assert!(
                e.ends_with("_f32") || e.ends_with("_f64"),
                "{e}: names end in the dtype (<op>_<variant>_<dtype>)"
            );
            assert!(registered_all.insert(e.to_string()), "{e} registered twice");
        }
    }
    // Every name the launch code can build is registered, and every registered name is
    // reachable from a name builder.
    let built: BTreeSet<String> = all_named_entries().into_iter().map(|(_, n)| n).collect();
    let not_registered: Vec<_> = built.difference(&registered_all).collect();
    let not_built: Vec<_> = registered_all.difference(&built).collect();
    assert!(
        not_registered.is_empty(),
        "launch names not registered: {not_registered:?}"
    );
    assert!(
        not_built.is_empty(),
        "registered but never launched: {not_built:?}"
    );
    for (file, name) in all_named_entries() {
        let m = ufm::backend::kernels::module_of(&name).unwrap();
        assert_eq!(m.file, file, "{name} registered in the wrong module");
    }
}

#[test]
fn every_cu_file_is_registered_and_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(root.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".cu"))
        .map(|f| format!("kernels/{f}"))
        .collect();
    files.sort();
    let mut reg: Vec<String> = MODULES.iter().map(|m| m.file.to_string()).collect();
    reg.sort();
    assert_eq!(files, reg, "kernels/*.cu files and the registry differ");
    let readme = std::fs::read_to_string(root.join("kernels/README.md")).unwrap();
    for m in MODULES.iter() {
        for e in m.entries {
            assert!(
                readme.contains(&format!("`{e}`")),
                "kernels/README.md does not list `{e}`"
            );
        }
    }
}

#[test]
fn parser_finds_plain_and_macro_entries_but_not_definitions() {
    let src = "#define X_ENTRY(NAME, T) \\\n  extern \"C\" __global__ void NAME(T* x) {}\n\
               X_ENTRY(foo_bar_f32, float)\n\
               extern \"C\" __global__ void baz_qux_f64(double* x) {}\n\
               // X_ENTRY(commented_f32, float)\n";
    let got = defined_entries(src);
    let want: BTreeSet<String> = ["foo_bar_f32", "baz_qux_f64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}
