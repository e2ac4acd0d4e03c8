//! Device and dtype names as the studio's config, the `hallo2` CLI and the benchmarks take them.

use candle_core::{DType, Device};

/// A device setting, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU the build supports, else the CPU (the caller decides how to try).
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

/// Parses `cpu`, `cuda`, `cuda:N`, `metal`, `auto`.
pub fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        "metal" => Ok(DeviceChoice::Metal),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
            _ => Err(format!(
                "device must be auto, cpu, cuda, cuda:N or metal, got `{s}`"
            )),
        },
    }
}

impl DeviceChoice {
    /// Opens the device this names; `Auto` is the CPU here (a caller that prefers a GPU tries
    /// one first). A GPU the build or the machine lacks is an error, never the CPU.
    pub fn open(self) -> candle_core::Result<Device> {
        match self {
            Self::Auto | Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => Device::new_cuda(n),
            Self::Metal => Device::new_metal(0),
        }
    }

    /// `auto`, `cpu`, `cuda:N` or `metal`.
    pub fn label(self) -> String {
        match self {
            Self::Auto => "auto".into(),
            Self::Cpu => "cpu".into(),
            Self::Cuda(n) => format!("cuda:{n}"),
            Self::Metal => "metal".into(),
        }
    }
}

/// Parses `f32`, `f16` or `bf16`, the dtypes the model runs in.
pub fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("dtype must be f32, f16 or bf16, got `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_label_back() {
        for name in ["cpu", "cuda:0", "cuda:3", "metal", "auto"] {
            assert_eq!(parse_device(name).unwrap().label(), name);
        }
        assert_eq!(parse_device("cuda"), Ok(DeviceChoice::Cuda(0)));
        assert!(parse_device("gpu").unwrap_err().contains("`gpu`"));
        assert_eq!(parse_dtype("bf16"), Ok(DType::BF16));
        assert!(parse_dtype("f64").unwrap_err().contains("`f64`"));
    }
}
