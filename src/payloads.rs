//! The bridges embedded by build.rs.

use include_dir::{include_dir, Dir};

use ferry_launcher::{Image, Images};

static PAYLOADS: Dir<'static> = include_dir!("$OUT_DIR/payloads");

/// Every embedded image, as listed in build.rs's index.
pub fn images() -> Images {
    let index = PAYLOADS
        .get_file("index")
        .and_then(|f| f.contents_utf8())
        .unwrap_or_default();
    let images = index
        .lines()
        .filter_map(|line| {
            let mut w = line.split(' ');
            let (arch, target, size, sha) = (w.next()?, w.next()?, w.next()?, w.next()?);
            let zstd = PAYLOADS.get_file(format!("{arch}.zst"))?.contents();
            Some(Image {
                arch,
                target,
                sha256: sha,
                raw_size: size.parse().ok()?,
                zstd,
            })
        })
        .collect();
    Images(images)
}
