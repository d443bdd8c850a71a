//! Geometry and image (spec §5): psana's geometry text, segment models, the object tree with its
//! coordinate transforms, image indices and assembly with hole filling, and the default geometries.

pub mod defaults;
pub mod image;
pub mod segments;
pub mod text;
pub mod tree;

pub use defaults::{default_geometry, DefaultGeometry};
pub use image::{ImageMapper, ImageOptions, PixelIndices};
pub use segments::SegmentModel;
pub use text::{parse_geometry_text, GeometryLine};
pub use tree::{Geometry, PixelCoords, Placement};

impl Geometry {
    /// A detector's default geometry (spec §5.5), parsed.
    pub fn from_default(default: DefaultGeometry) -> Result<Self, crate::GeometryError> {
        Geometry::from_text(default.text, default.name)
    }

    /// Every pixel's image (row, col) and the image shape.
    pub fn pixel_indices(&self) -> PixelIndices {
        PixelIndices::from_coords(&self.pixel_coords())
    }

    /// The mapper from frames of `daq_segments` to images, built once.
    pub fn image_mapper(&self, daq_segments: &[u32], options: ImageOptions) -> Result<ImageMapper, crate::GeometryError> {
        ImageMapper::new(&self.pixel_indices(), daq_segments, options)
    }
}
