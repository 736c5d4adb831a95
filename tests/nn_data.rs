//! Data loaders on the real files (`UFM_DATA_DIR`, default `../shared/data`; see its README),
//! on synthetic files in the same formats and on corrupted copies. Label histograms are the
//! published ones (README of the data folder).

mod common;

use common::real_data_dir;
use ufm::nn::data::{self, DatasetName};

#[test]
#[ignore = "needs the real data (UFM_DATA_DIR or ../shared/data)"]
fn real_data_mnist_loads_with_published_histograms_and_32x32_images() {
    let d = data::load_mnist(&real_data_dir()).unwrap();
    assert_eq!(d.train.len(), 60000);
    assert_eq!(d.test.len(), 10000);
    assert_eq!(
        d.train.class_counts(10),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        d.test.class_counts(10),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(
        (d.train.channels, d.train.height, d.train.width),
        (1, 32, 32)
    );
    // MNIST digits are centred: the resized border rows are black, the centre is not.
    let img = d.train.image(0);
    assert!(img[..32].iter().all(|&v| v == 0));
    assert!(img.iter().map(|&v| v as u32).sum::<u32>() > 10_000);
    let (x, y) = data::make_batch::<f32>(&d.test, &[0, 1], DatasetName::Mnist, None);
    assert_eq!(x.dim(), (2, 3, 32, 32));
    assert_eq!(y, vec![7, 2]); // first two test digits of MNIST
    let bg = (0.0 - 0.1307f32) / 0.3081;
    assert!((x[[0, 2, 0, 0]] - bg).abs() < 1e-6);
}

#[test]
#[ignore = "needs the real data (UFM_DATA_DIR or ../shared/data)"]
fn real_data_cifar_subset_loads_any_multiple_of_3073_bytes() {
    let d = data::load_cifar10(&real_data_dir()).unwrap();
    assert_eq!(d.train.len(), 4000);
    assert_eq!(d.test.len(), 1000);
    assert_eq!(
        d.train.class_counts(10),
        vec![396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
    );
    assert_eq!(
        d.test.class_counts(10),
        vec![103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    );
    // test record 0 (a cat) starts 158, 159, 165 in the red plane
    assert_eq!(&d.test.image(0)[..3], &[158, 159, 165]);
    assert_eq!(d.test.labels[0], 3);
    assert!(d.notes.iter().any(|n| n.contains("data_batch_2.bin")));
}

#[test]
fn corrupt_and_missing_files_give_actionable_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = data::load_mnist(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("MNIST/raw") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    // truncated image file (plain IDX)
    let raw = tmp.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut hdr = vec![0u8, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    hdr.extend(vec![0u8; 28 * 28]);
    std::fs::write(raw.join("train-images-idx3-ubyte"), &hdr).unwrap();
    std::fs::write(
        raw.join("train-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3],
    )
    .unwrap();
    let e = data::load_mnist(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
    // wrong magic
    hdr[3] = 1;
    std::fs::write(raw.join("train-images-idx3-ubyte"), &hdr).unwrap();
    let e = data::load_mnist(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
    // truncated CIFAR batch
    let cdir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(cdir.join("data_batch_1.bin"), vec![1u8; 3073 + 100]).unwrap();
    let e = data::load_cifar10(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("3073"), "{e}");
    std::fs::write(cdir.join("data_batch_1.bin"), vec![1u8; 3073]).unwrap();
    let e = data::load_cifar10(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("cifar-10-binary.tar.gz"),
        "{e}"
    );
}

/// On a synthetic CIFAR-10 of 5 images per class: the random labels are balanced, saved, and
/// read back from the file instead of drawn again from a new seed.
#[test]
fn random_labels_are_saved_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::synthetic_cifar(&tmp.path().join("data"), 5, 2, 3);
    let f = tmp.path().join("labels.json");
    let a = data::load_cifar10_random(&dir, &f, 5).unwrap();
    assert!(f.is_file());
    assert_eq!(a.train.len(), 50);
    assert!(a.train.class_counts(10).iter().all(|&c| c == 5));
    let orig = data::load_cifar10(&dir).unwrap();
    assert_ne!(a.train.labels, orig.train.labels, "labels must be redrawn");
    let b = data::load_cifar10_random(&dir, &f, 999).unwrap();
    assert_eq!(
        a.train.labels, b.train.labels,
        "labels must come from the file, not the new seed"
    );
}

/// The synthetic files the tests train on are read by the real loaders: sizes, balanced
/// histograms, 32×32 MNIST after resizing.
#[test]
fn synthetic_fixtures_load_like_the_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let m = data::load_mnist(&common::synthetic_mnist(tmp.path(), 7, 3, 1)).unwrap();
    assert_eq!((m.train.len(), m.test.len()), (70, 30));
    assert_eq!(m.train.class_counts(10), vec![7; 10]);
    assert_eq!(
        (m.train.channels, m.train.height, m.train.width),
        (1, 32, 32)
    );
    let c = data::load_cifar10(&common::synthetic_cifar(tmp.path(), 4, 2, 2)).unwrap();
    assert_eq!((c.train.len(), c.test.len()), (40, 20));
    assert_eq!(c.test.class_counts(10), vec![2; 10]);
}
