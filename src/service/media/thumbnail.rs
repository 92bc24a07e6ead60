//! Thumbnail geometry and rendering (spec: content repository, "Thumbnails").
//!
//! `scale` fits the image in the requested box, keeping its aspect ratio;
//! `crop` fills the box and cuts off what overflows. Neither ever upscales:
//! when the original is no larger than asked, the original is served. The
//! functions here are synchronous and CPU-bound; callers run them on the
//! blocking pool.

use std::{io::Cursor, path::Path};

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageFormat, ImageReader, Limits, RgbaImage,
    codecs::gif::{GifDecoder, GifEncoder, Repeat},
    imageops::FilterType,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// spec: the sizes servers SHOULD produce.
pub const RECOMMENDED: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// What the file's own bytes say it is.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub animated: bool,
}

impl Probe {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// The size of the thumbnail for a request, or `None` when the original
/// is no larger than asked and is served as it is.
pub fn target_size(
    original: (u32, u32),
    requested: (u32, u32),
    method: Method,
) -> Option<(u32, u32)> {
    let (ow, oh) = (u64::from(original.0), u64::from(original.1));
    let (rw, rh) = (u64::from(requested.0.max(1)), u64::from(requested.1.max(1)));
    if ow <= rw && oh <= rh {
        return None;
    }
    let (w, h) = match method {
        // Width-bound when the box is relatively narrower than the image.
        Method::Scale if rw * oh <= rh * ow => (rw, (rw * oh / ow).max(1)),
        Method::Scale => ((rh * ow / oh).max(1), rh),
        // Filling the box would upscale: cut the box's aspect out of the
        // original at the original's scale instead.
        Method::Crop if ow < rw || oh < rh => {
            if ow * rh > oh * rw {
                ((oh * rw / rh).max(1), oh)
            } else {
                (ow, (ow * rh / rw).max(1))
            }
        }
        Method::Crop => (rw, rh),
    };
    Some((w as u32, h as u32))
}

/// Whether a stored thumbnail of `size` answers a request whose target is
/// `target`: never smaller, and for `crop` of the same aspect ratio.
pub fn satisfies(size: (u32, u32), target: (u32, u32), method: Method) -> bool {
    let big_enough = size.0 >= target.0 && size.1 >= target.1;
    let same_aspect = || {
        let have = f64::from(size.0) / f64::from(size.1);
        let want = f64::from(target.0) / f64::from(target.1);
        (have / want - 1.0).abs() < 0.02
    };
    big_enough && (method == Method::Scale || same_aspect())
}

fn reader(
    path: &Path,
    max_pixels: u64,
) -> std::io::Result<ImageReader<std::io::BufReader<std::fs::File>>> {
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = Limits::default();
    // Decoded RGBA bytes of the largest image allowed, with room for the copy resizing makes.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    Ok(reader)
}

/// Reads the image's header: `None` for anything that is not an image we thumbnail.
pub fn probe(path: &Path) -> Option<Probe> {
    let reader = reader(path, u64::MAX / 8).ok()?;
    let format = reader.format()?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
    ) {
        return None;
    }
    let (width, height) = reader.into_dimensions().ok()?;
    let animated = format == ImageFormat::Gif && gif_frames(path, 2).is_some_and(|n| n > 1);
    Some(Probe {
        format,
        width,
        height,
        animated,
    })
}

fn gif_frames(path: &Path, at_most: usize) -> Option<usize> {
    let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let decoder = GifDecoder::new(file).ok()?;
    Some(
        decoder
            .into_frames()
            .take(at_most)
            .filter(Result::is_ok)
            .count(),
    )
}

/// A rendered thumbnail.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot thumbnail: {0}")]
pub struct RenderError(String);

/// Renders the image at `path` as a `size` thumbnail; `animated` keeps a
/// GIF's frames (as a GIF), otherwise the first frame is used.
pub fn render(
    path: &Path,
    size: (u32, u32),
    method: Method,
    animated: bool,
    max_pixels: u64,
) -> Result<Rendered, RenderError> {
    if animated {
        return render_animated(path, size, method, max_pixels);
    }
    let image = reader(path, max_pixels)
        .map_err(|e| RenderError(e.to_string()))?
        .decode()
        .map_err(|e| RenderError(e.to_string()))?;
    let thumb = resize(&image, size, method);
    encode_still(&thumb)
}

fn resize(image: &DynamicImage, (w, h): (u32, u32), method: Method) -> DynamicImage {
    if (image.width(), image.height()) == (w, h) {
        return image.clone();
    }
    match method {
        Method::Scale => image.resize_exact(w, h, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(w, h, FilterType::Triangle),
    }
}

/// PNG when the image has transparency, JPEG otherwise.
fn encode_still(image: &DynamicImage) -> Result<Rendered, RenderError> {
    let mut bytes = Vec::new();
    let content_type = if image.color().has_alpha() {
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|e| RenderError(e.to_string()))?;
        "image/png"
    } else {
        let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85);
        rgb.write_with_encoder(encoder)
            .map_err(|e| RenderError(e.to_string()))?;
        "image/jpeg"
    };
    Ok(Rendered {
        bytes,
        content_type,
        width: image.width(),
        height: image.height(),
    })
}

fn render_animated(
    path: &Path,
    size: (u32, u32),
    method: Method,
    max_pixels: u64,
) -> Result<Rendered, RenderError> {
    let file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| RenderError(e.to_string()))?);
    let mut decoder = GifDecoder::new(file).map_err(|e| RenderError(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    image::ImageDecoder::set_limits(&mut decoder, limits)
        .map_err(|e| RenderError(e.to_string()))?;
    let mut frames = Vec::new();
    let mut decoded_pixels = 0u64;
    for frame in decoder.into_frames() {
        let frame = frame.map_err(|e| RenderError(e.to_string()))?;
        decoded_pixels += u64::from(frame.buffer().width()) * u64::from(frame.buffer().height());
        // Many frames of a large GIF add up: bound the total work as for a still.
        if decoded_pixels > max_pixels.saturating_mul(4) {
            return Err(RenderError("animation too large".into()));
        }
        let delay = frame.delay();
        let image = DynamicImage::ImageRgba8(frame.into_buffer());
        let thumb: RgbaImage = resize(&image, size, method).to_rgba8();
        frames.push(Frame::from_parts(thumb, 0, 0, delay));
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| RenderError(e.to_string()))?;
        encoder
            .encode_frames(frames)
            .map_err(|e| RenderError(e.to_string()))?;
    }
    Ok(Rendered {
        bytes,
        content_type: "image/gif",
        width: size.0,
        height: size.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_fits_the_box_and_never_upscales() {
        assert_eq!(
            target_size((1000, 500), (320, 240), Method::Scale),
            Some((320, 160))
        );
        assert_eq!(
            target_size((500, 1000), (320, 240), Method::Scale),
            Some((120, 240))
        );
        assert_eq!(target_size((300, 200), (320, 240), Method::Scale), None);
        assert_eq!(
            target_size((400, 100), (320, 240), Method::Scale),
            Some((320, 80))
        );
    }

    #[test]
    fn crop_takes_the_boxes_aspect_and_never_upscales() {
        assert_eq!(
            target_size((1000, 500), (96, 96), Method::Crop),
            Some((96, 96))
        );
        assert_eq!(target_size((20, 20), (96, 96), Method::Crop), None);
        // Taller than the box but narrower: a box-shaped cut at full width.
        assert_eq!(
            target_size((50, 200), (96, 96), Method::Crop),
            Some((50, 50))
        );
    }

    #[test]
    fn stored_thumbnails_answer_only_requests_they_do_not_shortchange() {
        assert!(satisfies((320, 160), (300, 150), Method::Scale));
        assert!(!satisfies((320, 160), (400, 200), Method::Scale));
        assert!(satisfies((96, 96), (50, 50), Method::Crop));
        assert!(
            !satisfies((96, 96), (60, 30), Method::Crop),
            "wrong aspect for crop"
        );
    }

    fn write(
        dir: &Path,
        name: &str,
        image: &DynamicImage,
        format: ImageFormat,
    ) -> std::path::PathBuf {
        let path = dir.join(name);
        image.save_with_format(&path, format).unwrap();
        path
    }

    #[test]
    fn renders_each_format_at_the_target_size() {
        let dir = tempfile::tempdir().unwrap();
        let opaque = DynamicImage::ImageRgb8(image::RgbImage::from_fn(400, 300, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }));
        let clear =
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(400, 300, image::Rgba([1, 2, 3, 100])));
        let cases = [
            (
                write(dir.path(), "a.jpg", &opaque, ImageFormat::Jpeg),
                "image/jpeg",
            ),
            (
                write(dir.path(), "a.png", &clear, ImageFormat::Png),
                "image/png",
            ),
            (
                write(dir.path(), "a.webp", &opaque, ImageFormat::WebP),
                "image/jpeg",
            ),
            (
                write(dir.path(), "a.gif", &opaque, ImageFormat::Gif),
                "image/png",
            ),
        ];
        for (path, content_type) in cases {
            let probe = probe(&path).unwrap();
            assert_eq!((probe.width, probe.height), (400, 300), "{path:?}");
            let out = render(&path, (96, 96), Method::Crop, false, 1 << 24).unwrap();
            assert_eq!(out.content_type, content_type, "{path:?}");
            let decoded = image::load_from_memory(&out.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (96, 96));
        }
    }

    #[test]
    fn animated_gif_keeps_its_frames_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anim.gif");
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut encoder = GifEncoder::new(file);
            let frames = (0..3).map(|i| {
                Frame::new(RgbaImage::from_pixel(
                    200,
                    100,
                    image::Rgba([i * 80, 0, 0, 255]),
                ))
            });
            encoder.encode_frames(frames).unwrap();
        }
        assert!(probe(&path).unwrap().animated);
        let anim = render(&path, (64, 32), Method::Scale, true, 1 << 24).unwrap();
        assert_eq!(anim.content_type, "image/gif");
        let frames = GifDecoder::new(Cursor::new(&anim.bytes))
            .unwrap()
            .into_frames()
            .count();
        assert_eq!(frames, 3);
        let still = render(&path, (64, 32), Method::Scale, false, 1 << 24).unwrap();
        assert_ne!(still.content_type, "image/gif");
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = DynamicImage::ImageRgb8(image::RgbImage::new(1000, 1000));
        let path = write(dir.path(), "big.png", &big, ImageFormat::Png);
        assert!(render(&path, (32, 32), Method::Crop, false, 10_000).is_err());
    }
}
