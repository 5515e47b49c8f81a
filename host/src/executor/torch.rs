//! libtorch at the edge of the executor: device resolution, conversion of
//! host tensors to and from `tch::Tensor` (only here), and one forward call.

use tch::{CModule, Device, IValue, Kind};

use super::ModelError;
use crate::device::DeviceSpec;
use crate::tensor::{Dtype, Tensor};

/// The libtorch device for `spec`; `cuda:N` fails when that device is absent.
pub fn resolve(spec: DeviceSpec) -> Result<Device, ModelError> {
    match spec {
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count() as usize;
            if n < count {
                Ok(Device::Cuda(n))
            } else {
                Err(ModelError::Device(format!(
                    "cuda:{n} requested but libtorch sees {count} CUDA device(s) \
                     (a host built without the `cuda` feature sees none)"
                )))
            }
        }
    }
}

/// What this binary's libtorch offers: whether it was built with the
/// `cuda` feature, whether `libtorch_cuda` is loaded in this process (the
/// link really happened), and the CUDA devices libtorch sees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceReport {
    /// Built with `--features cuda`.
    pub cuda_feature: bool,
    /// `libtorch_cuda.so` is mapped into this process.
    pub libtorch_cuda_loaded: bool,
    /// CUDA devices libtorch sees (0 on a machine without a GPU).
    pub cuda_devices: usize,
    /// Whether cuDNN is usable.
    pub cudnn: bool,
    /// Where `auto` puts a model.
    pub auto: String,
}

/// The device report of this process.
pub fn devices() -> DeviceReport {
    let cuda_devices = tch::Cuda::device_count().max(0) as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    DeviceReport {
        cuda_feature: cfg!(feature = "cuda"),
        libtorch_cuda_loaded: maps.contains("libtorch_cuda.so"),
        cuda_devices,
        cudnn: cuda_devices > 0 && tch::Cuda::cudnn_is_available(),
        auto: device_name(Device::cuda_if_available()),
    }
}

/// Shows a device as `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// The libtorch kind of a dtype.
pub fn kind_of(dtype: Dtype) -> Kind {
    match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::Bool => Kind::Bool,
    }
}

/// The dtype of a libtorch kind, if the host carries it.
pub fn dtype_of(kind: Kind) -> Result<Dtype, ModelError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::Bool,
        other => return Err(ModelError::Output(format!("a tensor of unsupported element type {other:?}"))),
    })
}

fn torch_err(e: tch::TchError) -> ModelError {
    ModelError::Forward(short_message(&e.to_string()))
}

/// libtorch's message reduced to the line that names the problem: the last
/// `SomethingError: …` line (a TorchScript traceback ends with it), else
/// the first line. The whole message, C++ backtrace and all, goes to the
/// debug log.
pub fn short_message(full: &str) -> String {
    let lines: Vec<&str> = full.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() > 1 {
        tracing::debug!("libtorch said: {full}");
    }
    let is_error_line = |l: &&&str| l.split_once(": ").is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '));
    let line = lines.iter().skip(1).rev().find(is_error_line).or(lines.first()).copied().unwrap_or_default();
    line.strip_prefix("Internal torch error: ").unwrap_or(line).to_string()
}

/// A libtorch tensor (on the CPU) holding a copy of `t`, after validation.
pub fn to_torch(t: &Tensor) -> Result<tch::Tensor, ModelError> {
    t.validate()?;
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::f_from_data_size(&t.data, &shape, kind_of(t.dtype)).map_err(torch_err)
}

/// Copies a libtorch tensor (any device, any layout) into a host tensor.
pub fn from_torch(t: &tch::Tensor) -> Result<Tensor, ModelError> {
    let dtype = dtype_of(t.f_kind().map_err(torch_err)?)?;
    let t = t.f_to_device(Device::Cpu).map_err(torch_err)?.f_contiguous().map_err(torch_err)?;
    let shape: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
    let numel: usize = shape.iter().product::<u64>() as usize;
    let mut data = vec![0u8; numel * dtype.size() as usize];
    t.f_copy_data_u8(&mut data, numel).map_err(torch_err)?;
    Ok(Tensor { dtype, shape, data })
}

/// One forward pass of `module` on `inputs` (copied to `device`); the
/// outputs flattened in order and copied back to host tensors.
pub fn forward(module: &CModule, device: Device, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
    let ivalues = inputs
        .iter()
        .map(|t| Ok(IValue::Tensor(to_torch(t)?.f_to_device(device).map_err(torch_err)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let out = module.forward_is(&ivalues).map_err(torch_err)?;
    let mut tensors = Vec::new();
    flatten(out, &mut tensors)?;
    tensors.iter().map(from_torch).collect()
}

/// Flattens a tensor, or nested tuples/lists/dicts of tensors, in order.
fn flatten(v: IValue, out: &mut Vec<tch::Tensor>) -> Result<(), ModelError> {
    match v {
        IValue::Tensor(t) => out.push(t),
        IValue::TensorList(ts) => out.extend(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => {
            for v in vs {
                flatten(v, out)?;
            }
        }
        IValue::GenericDict(kvs) => {
            for (_, v) in kvs {
                flatten(v, out)?;
            }
        }
        other => return Err(ModelError::Output(format!("{other:?}").chars().take(80).collect())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_dtypes() {
        for dtype in Dtype::ALL {
            let size = dtype.size();
            let data: Vec<u8> = (0..6 * size).map(|i| if dtype == Dtype::Bool { (i % 2) as u8 } else { i as u8 }).collect();
            let t = Tensor { dtype, shape: vec![2, 3], data };
            let back = from_torch(&to_torch(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dtype:?}");
        }
    }

    #[test]
    fn bad_tensors_are_named_not_passed_to_libtorch() {
        let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], data: vec![0; 20] };
        let e = to_torch(&t).unwrap_err();
        assert!(e.to_string().contains("needs 24 bytes, has 20"), "{e}");
        let half = tch::Tensor::zeros([2], (Kind::Half, Device::Cpu));
        assert!(from_torch(&half).unwrap_err().to_string().contains("Half"));
    }

    #[test]
    fn cuda_absent_is_a_clear_error_and_auto_falls_back() {
        if tch::Cuda::device_count() == 0 {
            assert_eq!(resolve(DeviceSpec::Auto).unwrap(), Device::Cpu);
            let e = resolve(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("cuda:0 requested"), "{e}");
        }
        assert_eq!(device_name(Device::Cuda(2)), "cuda:2");
        let report = devices();
        assert_eq!(report.cuda_feature, cfg!(feature = "cuda"));
        if !cfg!(feature = "cuda") {
            assert!(!report.libtorch_cuda_loaded, "a CPU build maps no libtorch_cuda");
        }
        assert_eq!(report.auto == "cpu", report.cuda_devices == 0);
    }

    #[test]
    fn libtorch_messages_are_cut_to_the_line_that_names_the_problem() {
        let traceback = "The following operation failed in the TorchScript interpreter.\n\
            Traceback of TorchScript, serialized code (most recent call last):\n\
              File \"code/__torch__.py\", line 10, in forward\n\
                input = torch.linear(x, w)\n\
            RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x32 and 64x8)\n";
        assert_eq!(short_message(traceback), "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x32 and 64x8)");
        let load = "Internal torch error: open file failed because of errno 2 on fopen: No such file or directory, file path: m.pt\n\
            Exception raised from RAIIFile at ../caffe2/serialize/file_adapter.cc:30 (most recent call first):\n\
            frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9c";
        assert_eq!(short_message(load), "open file failed because of errno 2 on fopen: No such file or directory, file path: m.pt");
        assert_eq!(short_message("one line"), "one line");
    }
}
