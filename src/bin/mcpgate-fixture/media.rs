//! Fixed binary payloads (a PNG image and a WAV clip), base64-encoded, used by
//! tools, resources and prompts that must return image or audio content.

use std::sync::LazyLock;

use base64::{Engine as _, engine::general_purpose::STANDARD};

/// A 1x1 red pixel PNG.
pub const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

/// MIME type of [`PNG_BASE64`].
pub const PNG_MIME: &str = "image/png";

/// MIME type of [`wav_base64`].
pub const WAV_MIME: &str = "audio/wav";

/// Sample rate of the generated clip, in Hz.
const SAMPLE_RATE: u32 = 8_000;

/// Number of samples in the generated clip (a tenth of a second).
const SAMPLES: u32 = SAMPLE_RATE / 10;

/// A short silent mono 8-bit PCM WAV clip, base64-encoded.
pub fn wav_base64() -> &'static str {
    static WAV: LazyLock<String> = LazyLock::new(|| STANDARD.encode(silent_wav()));
    &WAV
}

/// Builds the RIFF/WAVE bytes of the silent clip.
fn silent_wav() -> Vec<u8> {
    let mut wav = Vec::with_capacity(44 + SAMPLES as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + SAMPLES).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    wav.extend_from_slice(&SAMPLE_RATE.to_le_bytes()); // byte rate at 1 byte/sample
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&SAMPLES.to_le_bytes());
    wav.resize(wav.len() + SAMPLES as usize, 0x80); // 8-bit PCM silence
    wav
}
