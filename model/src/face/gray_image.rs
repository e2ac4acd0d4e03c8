//! The 8-bit single-channel image the mask path and its OpenCV/Pillow ports work on.

/// An 8-bit single-channel image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl GrayImage {
    /// An all-zero image.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    pub(crate) fn get(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }
}
