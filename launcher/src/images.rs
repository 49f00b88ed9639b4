use std::borrow::Cow;
use std::io::{self, Read, Write};

use ferry_stage1::{Codec, ImageSource, Tools};

/// One embedded bridge: a static executable for one architecture, stored zstd-compressed.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    /// Normalised architecture name, as the loader reports it (`x86_64`, `aarch64`).
    pub arch: &'static str,
    /// The Rust target it was built for.
    pub target: &'static str,
    /// sha256 of the raw executable, lower-case hex: its name in every cache.
    pub sha256: &'static str,
    pub raw_size: u64,
    pub zstd: &'static [u8],
}

impl Image {
    /// The raw executable.
    pub fn raw(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.raw_size as usize);
        zstd::stream::read::Decoder::new(self.zstd)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// The set of images this ferry carries.
#[derive(Clone, Debug, Default)]
pub struct Images(pub Vec<Image>);

impl Images {
    pub fn get(&self, arch: &str) -> Option<&Image> {
        self.0.iter().find(|i| i.arch == arch)
    }

    /// `(arch, sha256)` of every image, for the loader's command line.
    pub fn offers(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|i| (i.arch.to_owned(), i.sha256.to_owned()))
            .collect()
    }

    pub fn arches(&self) -> Vec<&'static str> {
        self.0.iter().map(|i| i.arch).collect()
    }
}

impl ImageSource for Images {
    fn encoded(&self, arch: &str, tools: &Tools) -> io::Result<(Codec, Cow<'_, [u8]>)> {
        let image = self.get(arch).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no image for {arch}"))
        })?;
        let codec = tools.best_codec();
        let bytes = match codec {
            Codec::Zstd => Cow::Borrowed(image.zstd),
            Codec::Gzip => {
                let raw = image.raw()?;
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 2),
                    flate2::Compression::new(9),
                );
                gz.write_all(&raw)?;
                Cow::Owned(gz.finish()?)
            }
            Codec::Raw => Cow::Owned(image.raw()?),
        };
        Ok((codec, bytes))
    }
}
