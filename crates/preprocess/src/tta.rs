//! Test-time augmentation: the views of one image that a prediction averages.
//!
//! * [`Tta::None`]: the eval transform alone (`Resize(resize)`, `CenterCrop(size)`).
//! * [`Tta::Flip`]: that view and its horizontal mirror.
//! * [`Tta::FiveCrop`]: `Resize(resize)` then torchvision's `FiveCrop(size)`: the four corners
//!   and the centre, in torchvision's order (top-left, top-right, bottom-left, bottom-right,
//!   centre), see [`five_crop`].

use std::path::Path;
use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::decode::{decode_rgb_bytes, decode_rgb_window_bytes, with_window_buf, Pixels};
use crate::transform::{center_crop, eval_u8, eval_u8_view, resize_center_crop_source, resize_shorter, write_tensor, TransformConfig, View};
use crate::Error;

/// Which views of an image a prediction averages (in probability space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Tta {
    /// One view: the eval transform.
    #[default]
    None,
    /// The eval view and its horizontal mirror (2 forward passes per image).
    Flip,
    /// The four corner crops and the centre crop of the resized image (5 forward passes).
    FiveCrop,
}

impl Tta {
    /// Every mode, cheapest first.
    pub const ALL: [Tta; 3] = [Tta::None, Tta::Flip, Tta::FiveCrop];

    /// Views (forward passes) per image.
    pub fn views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::Flip => 2,
            Tta::FiveCrop => 5,
        }
    }

    /// The name used on the command line and in files: `none`, `flip`, `five-crop`.
    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::FiveCrop => "five-crop",
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Tta {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Tta::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| format!("unknown test-time augmentation {s:?} (none, flip, five-crop)"))
    }
}

/// torchvision's `FiveCrop(size)` of `img`: `[top-left, top-right, bottom-left, bottom-right,
/// centre]`, the corners at offsets `(0, 0)`, `(w − size, 0)`, `(0, h − size)`,
/// `(w − size, h − size)` and the centre as `CenterCrop(size)`. `None` when `size` exceeds a side
/// (torchvision raises there).
pub fn five_crop(img: &RgbImage, size: u32) -> Option<[RgbImage; 5]> {
    let (w, h) = img.dimensions();
    if size > w || size > h {
        return None;
    }
    let crop = |x: u32, y: u32| image::imageops::crop_imm(img, x, y, size, size).to_image();
    Some([crop(0, 0), crop(w - size, 0), crop(0, h - size), crop(w - size, h - size), center_crop(img, size)])
}

/// The normalised views (each `3 × size × size`, CHW) of a decoded image under `tta`:
/// [`write_tensor`] of each of [`tta_views_u8`]. The first view of `None` and `Flip` is exactly
/// [`transform`](crate::transform::transform())'s eval output.
pub fn tta_views(img: &RgbImage, cfg: &TransformConfig, tta: Tta) -> Result<Vec<Vec<f32>>, Error> {
    let s = cfg.image_size;
    let tensor = |rgb: &RgbImage| {
        let mut out = vec![0f32; 3 * (s * s) as usize];
        write_tensor(rgb.as_raw(), s, cfg, false, false, &mut out);
        out
    };
    Ok(tta_views_u8(img, cfg, tta)?.iter().map(tensor).collect())
}

/// The views of [`tta_views`] before `ToTensor` + `Normalize`: packed RGB8 `size`×`size` images,
/// mirrored where the view is a mirror, a quarter of the floats' size (what a server queues).
pub fn tta_views_u8(img: &RgbImage, cfg: &TransformConfig, tta: Tta) -> Result<Vec<RgbImage>, Error> {
    let s = cfg.image_size;
    Ok(match tta {
        Tta::None | Tta::Flip => eval_views(eval_u8(img, cfg), tta),
        Tta::FiveCrop => {
            let resized = resize_shorter(img, cfg.resize_size);
            five_crop(&resized, s)
                .ok_or_else(|| {
                    Error::Config(format!("five-crop: crop {s} is larger than the resized image {}x{}", resized.width(), resized.height()))
                })?
                .into()
        }
    })
}

/// [`tta_views_u8`] of an encoded image (`name` names it in errors), decoded with `cfg`'s limits:
/// for [`Tta::None`] and [`Tta::Flip`] only the window the eval crop reads is decoded
/// ([`crate::decode::decode_rgb_window`]), with the same pixels.
pub fn tta_views_u8_of_bytes(bytes: &[u8], name: &Path, cfg: &TransformConfig, tta: Tta) -> Result<Vec<RgbImage>, Error> {
    if tta == Tta::FiveCrop {
        return tta_views_u8(&decode_rgb_bytes(bytes, name, &cfg.limits)?, cfg, tta);
    }
    let window = |w, h| resize_center_crop_source(w, h, cfg.resize_size, cfg.image_size);
    let view = with_window_buf(|buf| -> Result<RgbImage, Error> {
        Ok(match decode_rgb_window_bytes(bytes, name, &cfg.limits, window, buf)? {
            Pixels::Whole(img) => eval_u8(&img, cfg),
            Pixels::Window { w, h } => eval_u8_view(View { w, h, data: buf }, cfg),
        })
    })?;
    Ok(eval_views(view, tta))
}

/// The eval view alone, or with its mirror for [`Tta::Flip`].
fn eval_views(view: RgbImage, tta: Tta) -> Vec<RgbImage> {
    if tta == Tta::Flip {
        let mirror = image::imageops::flip_horizontal(&view);
        vec![view, mirror]
    } else {
        vec![view]
    }
}

/// [`tta_views`] of the image file at `path` (decoded with `cfg`'s limits).
pub fn tta_views_of_file(path: &Path, cfg: &TransformConfig, tta: Tta) -> Result<Vec<Vec<f32>>, Error> {
    cfg.validate()?;
    let img = crate::decode::decode_rgb_with(path, &cfg.limits)?;
    tta_views(&img, cfg, tta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{transform, Mode};

    /// The views of an encoded image equal those of its whole decode, for every fixture image
    /// (JPEGs of every layout take the windowed decode) and every kind of TTA; unreadable bytes
    /// are refused naming the file.
    #[test]
    fn views_of_bytes_equal_views_of_the_whole_decode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pixels");
        let cfg = TransformConfig::default();
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !crate::is_image_path(&path) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let img = crate::decode_rgb(&path).unwrap();
            for tta in [Tta::None, Tta::Flip, Tta::FiveCrop] {
                let want = tta_views_u8(&img, &cfg, tta).unwrap();
                assert_eq!(tta_views_u8_of_bytes(&bytes, &path, &cfg, tta).unwrap(), want, "{} {tta:?}", path.display());
            }
            n += 1;
        }
        assert!(n >= 20, "{n} fixture images");
        let e = tta_views_u8_of_bytes(b"\xFF\xD8\xFF\xE0 not a jpeg", Path::new("upload.jpg"), &cfg, Tta::None).unwrap_err();
        assert!(e.to_string().contains("upload.jpg"), "{e}");
        let e = tta_views_u8_of_bytes(b"", Path::new("empty.jpg"), &cfg, Tta::None).unwrap_err();
        assert!(matches!(&e, Error::BadInput(b) if b.problem == crate::Problem::Empty), "{e}");
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x + y) % 256) as u8]))
    }

    /// Each view, normalised, equals its definition computed another way: the eval transform, the
    /// eval crop normalised with a flip, torchvision's five crops of the resized image.
    #[test]
    fn views_equal_the_eval_transform_its_mirror_and_the_five_crops_bit_for_bit() {
        let cfg = TransformConfig::default();
        let s = cfg.image_size;
        let tensor = |rgb: &RgbImage, flip: bool| {
            let mut out = vec![0f32; 3 * (s * s) as usize];
            write_tensor(rgb.as_raw(), s, &cfg, flip, false, &mut out);
            out
        };
        let bits = |v: &[Vec<f32>]| v.iter().map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>();
        for (w, h) in [(300, 260), (257, 500)] {
            let img = gradient(w, h);
            let eval = transform(&img, Mode::Eval, &cfg, 0, 0, 0);
            let crops = five_crop(&resize_shorter(&img, cfg.resize_size), s).expect("fits");
            let want = [
                (Tta::None, vec![eval.clone()]),
                (Tta::Flip, vec![eval.clone(), tensor(&eval_u8(&img, &cfg), true)]),
                (Tta::FiveCrop, crops.iter().map(|c| tensor(c, false)).collect()),
            ];
            for (tta, want) in want {
                assert_eq!(bits(&tta_views(&img, &cfg, tta).expect("views")), bits(&want), "{tta:?} on {w}x{h}");
                let bytes = tta_views_u8(&img, &cfg, tta).expect("u8 views");
                assert_eq!(bits(&bytes.iter().map(|b| tensor(b, false)).collect::<Vec<_>>()), bits(&want), "u8 {tta:?} on {w}x{h}");
            }
        }
        // An image without pixels gives the eval transform's normalised black view too.
        let tiny = TransformConfig { image_size: 4, resize_size: 4, ..Default::default() };
        for (w, h) in [(0, 5), (5, 0)] {
            let img = RgbImage::new(w, h);
            assert_eq!(tta_views(&img, &tiny, Tta::None).expect("views"), vec![transform(&img, Mode::Eval, &tiny, 0, 0, 0)], "{w}x{h}");
        }
    }

    #[test]
    fn five_crop_corners_and_centre() {
        let img = gradient(300, 260);
        let crops = five_crop(&img, 224).expect("fits");
        assert_eq!(crops[0].get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(crops[1].get_pixel(0, 0), img.get_pixel(76, 0));
        assert_eq!(crops[2].get_pixel(0, 0), img.get_pixel(0, 36));
        assert_eq!(crops[3].get_pixel(223, 223), img.get_pixel(299, 259));
        assert_eq!(crops[4].get_pixel(0, 0), img.get_pixel(38, 18));
        assert!(five_crop(&img, 261).is_none());
    }

    #[test]
    fn flip_view_is_the_mirrored_eval_view() {
        let cfg = TransformConfig { image_size: 32, resize_size: 40, ..TransformConfig::default() };
        let views = tta_views(&gradient(57, 45), &cfg, Tta::Flip).expect("views");
        let (a, b) = (&views[0], &views[1]);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    assert_eq!(a[c * 1024 + y * 32 + x], b[c * 1024 + y * 32 + 31 - x]);
                }
            }
        }
        assert_eq!(tta_views(&gradient(57, 45), &cfg, Tta::FiveCrop).expect("five").len(), 5);
        assert_eq!("five-crop".parse::<Tta>(), Ok(Tta::FiveCrop));
    }
}
