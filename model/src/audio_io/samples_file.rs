//! The driving audio decoded once into a file of 16 kHz mono f32 samples, for the paths that
//! read it piece by piece (wav2vec2 one 60 s segment at a time, the Opus track in blocks): a
//! long audio is never held whole in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::decode::{
    AudioInput, MonoSink, StreamStart, check_finite, check_length, check_peak, decode_stream,
};
use super::resample::StreamResampler;
use super::{AudioError, AudioLimits};
use crate::audio_features::{SAMPLE_RATE, SEGMENT_SECONDS};
use crate::vocals::{SEPARATION_RATE, VocalSeparator};

/// 16 kHz mono samples in a file (little-endian f32), with what decoding found.
#[derive(Debug, Clone)]
pub struct SamplesFile {
    pub path: PathBuf,
    /// Samples in the file.
    pub len: usize,
    /// Sample rate of the source file, in Hz.
    pub source_rate: u32,
    /// Duration of the decoded audio, in seconds (at the source rate, after trimming).
    pub duration_s: f64,
    /// Peak of the mono mixdown before resampling, in dBFS.
    pub peak_dbfs: f64,
}

impl SamplesFile {
    /// Samples `start .. end`, zeros past the end of the file.
    pub fn read(&self, (start, end): (usize, usize)) -> Result<Vec<f32>, AudioError> {
        /// Bytes converted at a time (the samples are the only buffer that grows with the range).
        const PIECE: usize = 1 << 16;
        let mut out = vec![0f32; end.saturating_sub(start)];
        let have = end.min(self.len).saturating_sub(start);
        if have > 0 {
            let file = File::open(&self.path).map_err(|e| AudioError::io(&self.path, e))?;
            let mut bytes = vec![0u8; PIECE];
            for (i, chunk) in out[..have].chunks_mut(PIECE / 4).enumerate() {
                let bytes = &mut bytes[..chunk.len() * 4];
                let at = (start + i * (PIECE / 4)) as u64 * 4;
                file.read_exact_at(bytes, at)
                    .map_err(|e| AudioError::io(&self.path, e))?;
                for (o, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Ok(out)
    }

    /// Hands every sample to `f`, in order, a block of `block` at a time.
    pub fn for_each_block<E: From<AudioError>>(
        &self,
        block: usize,
        f: &mut dyn FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let block = block.max(1);
        for start in (0..self.len).step_by(block) {
            let end = (start + block).min(self.len);
            f(&self.read((start, end))?)?;
        }
        Ok(())
    }
}

/// Decodes `input` into 16 kHz mono f32 samples at `out` (created or truncated), with the
/// checks of [`decode_audio_file`](super::decode_audio_file): size, length, truncation,
/// finiteness (at the first bad sample) and silence (once the whole file is decoded).
pub fn decode_to_samples_file(
    input: AudioInput<'_>,
    extension: Option<&str>,
    limits: &AudioLimits,
    out: &Path,
) -> Result<SamplesFile, AudioError> {
    let mut sink = To16kFile::create(out)?;
    let summary = decode_stream(input, extension, limits, &mut sink)?;
    sink.finish(summary.frames, limits)
}

/// [`decode_to_samples_file`], and the separated vocals as Hallo2 feeds them to wav2vec2 in a
/// second file at `vocals_out`: the left and right channels (a mono source in both) at the
/// separation rate, one 60 s segment at a time through `separator` (upstream separates each
/// `use_cut` segment on its own), each segment's vocals brought to 16 kHz mono. Returns (mix,
/// vocals).
pub fn decode_with_vocals(
    input: AudioInput<'_>,
    extension: Option<&str>,
    limits: &AudioLimits,
    separator: &VocalSeparator,
    out: &Path,
    vocals_out: &Path,
) -> Result<(SamplesFile, SamplesFile), AudioError> {
    let vocals_file = File::create(vocals_out).map_err(|e| AudioError::io(vocals_out, e))?;
    let mut sink = SeparatingSink {
        mix: To16kFile::create(out)?,
        to_separation_rate: [None, None],
        segment: [Vec::new(), Vec::new()],
        separator,
        vocals: BufWriter::with_capacity(1 << 16, vocals_file),
        vocals_path: vocals_out,
        vocals_written: 0,
    };
    let summary = decode_stream(input, extension, limits, &mut sink)?;
    for (resampler, segment) in sink.to_separation_rate.iter_mut().zip(&mut sink.segment) {
        if let Some(resampler) = resampler.take() {
            resampler.finish(&mut |chunk| -> Result<(), AudioError> {
                segment.extend_from_slice(chunk);
                Ok(())
            })?;
        }
    }
    sink.separate_segments(true)?;
    sink.vocals
        .flush()
        .map_err(|e| AudioError::io(vocals_out, e))?;
    let mix = sink.mix.finish(summary.frames, limits)?;
    let vocals = SamplesFile {
        path: vocals_out.to_path_buf(),
        len: sink.vocals_written,
        ..mix.clone()
    };
    Ok((mix, vocals))
}

/// Hands the decoder's mono output to the 16 kHz mix file and its two channels, at the
/// separation rate, to the separator a segment at a time (the package separates the channels
/// together).
struct SeparatingSink<'a> {
    mix: To16kFile<'a>,
    to_separation_rate: [Option<StreamResampler>; 2],
    /// Left and right at the separation rate, not yet separated (less than a segment, between
    /// calls).
    segment: [Vec<f32>; 2],
    separator: &'a VocalSeparator,
    vocals: BufWriter<File>,
    vocals_path: &'a Path,
    vocals_written: usize,
}

impl SeparatingSink<'_> {
    /// Separates every whole segment gathered (and the rest too when `last`).
    fn separate_segments(&mut self, last: bool) -> Result<(), AudioError> {
        let segment_len = SEGMENT_SECONDS * SEPARATION_RATE as usize;
        // Both channels go through the same resampler settings: equal lengths.
        let mut have = self.segment[0].len().min(self.segment[1].len());
        while have >= segment_len || (last && have > 0) {
            let take = have.min(segment_len);
            let mix = self
                .segment
                .each_mut()
                .map(|channel| channel.drain(..take).collect::<Vec<f32>>());
            have -= take;
            let vocals = self.separator.separate(mix)?;
            for s in vocals.to_mono(SAMPLE_RATE as u32)? {
                self.vocals
                    .write_all(&s.to_le_bytes())
                    .map_err(|e| AudioError::io(self.vocals_path, e))?;
                self.vocals_written += 1;
            }
        }
        Ok(())
    }
}

impl MonoSink for SeparatingSink<'_> {
    fn start(&mut self, start: &StreamStart) -> Result<(), AudioError> {
        self.mix.start(start)?;
        for resampler in &mut self.to_separation_rate {
            *resampler = StreamResampler::new(start.rate, SEPARATION_RATE)?;
        }
        Ok(())
    }

    fn samples(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.mix.samples(samples)
    }

    fn wants_stereo(&self) -> bool {
        true
    }

    fn stereo(&mut self, left: &[f32], right: &[f32]) -> Result<(), AudioError> {
        for ((resampler, segment), samples) in self
            .to_separation_rate
            .iter_mut()
            .zip(&mut self.segment)
            .zip([left, right])
        {
            match resampler.as_mut() {
                None => segment.extend_from_slice(samples),
                Some(resampler) => {
                    resampler.push(samples, &mut |chunk| -> Result<(), AudioError> {
                        segment.extend_from_slice(chunk);
                        Ok(())
                    })?;
                }
            }
        }
        self.separate_segments(false)
    }
}

/// Checks, resamples and writes the decoder's output.
struct To16kFile<'a> {
    file: BufWriter<File>,
    path: &'a Path,
    resampler: Option<StreamResampler>,
    rate: u32,
    codec: String,
    /// Source samples seen, for error positions.
    frames: u64,
    peak: f32,
    written: usize,
}

impl<'a> To16kFile<'a> {
    fn create(out: &'a Path) -> Result<Self, AudioError> {
        let file = File::create(out).map_err(|e| AudioError::io(out, e))?;
        Ok(Self {
            file: BufWriter::with_capacity(1 << 16, file),
            path: out,
            resampler: None,
            rate: 0,
            codec: String::new(),
            frames: 0,
            peak: 0.0,
            written: 0,
        })
    }

    /// Flushes the resampler and the file; the length and silence checks of the whole input.
    fn finish(mut self, frames: u64, limits: &AudioLimits) -> Result<SamplesFile, AudioError> {
        if let Some(resampler) = self.resampler.take() {
            resampler.finish(&mut |chunk| self.write(chunk))?;
        }
        self.file
            .flush()
            .map_err(|e| AudioError::io(self.path, e))?;
        let duration_s = check_length(frames, self.rate, limits)?;
        let peak_dbfs = check_peak(self.peak, limits)?;
        Ok(SamplesFile {
            path: self.path.to_path_buf(),
            len: self.written,
            source_rate: self.rate,
            duration_s,
            peak_dbfs,
        })
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        for s in samples {
            self.file
                .write_all(&s.to_le_bytes())
                .map_err(|e| AudioError::io(self.path, e))?;
        }
        self.written += samples.len();
        Ok(())
    }
}

impl MonoSink for To16kFile<'_> {
    fn start(&mut self, start: &StreamStart) -> Result<(), AudioError> {
        self.rate = start.rate;
        self.codec = start.codec.clone();
        self.resampler = StreamResampler::new(start.rate, SAMPLE_RATE as u32)?;
        Ok(())
    }

    fn samples(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        check_finite(samples, self.frames, self.rate, &self.codec)?;
        self.frames += samples.len() as u64;
        self.peak = samples.iter().fold(self.peak, |m, x| m.max(x.abs()));
        match self.resampler.take() {
            None => self.write(samples),
            Some(mut resampler) => {
                let result = resampler.push(samples, &mut |chunk| self.write(chunk));
                self.resampler = Some(resampler);
                result
            }
        }
    }
}
