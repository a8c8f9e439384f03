//! Peak memory of metadata removal on a large JPEG (docs/benchmarks.md).
//!
//! `strip_rss make FILE MIB` writes a JPEG of about MIB MiB: Exif with GPS,
//! XMP, a comment, frame and table segments, MIB MiB of scan data and a
//! trailer after EOI. `strip_rss strip FILE` reads it into one buffer,
//! removes the metadata as the pipeline does and prints the sizes and the
//! process's peak resident set (VmHWM).

use bytes::Bytes;
use chartbridge::media::strip::{Format, strip};

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
}

fn make(path: &str, mib: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut head = vec![0xFF, 0xD8];
    segment(&mut head, 0xE0, b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0");
    let mut exif =
        b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(&[0u8; 4000]);
    segment(&mut head, 0xE1, &exif);
    segment(
        &mut head,
        0xE1,
        b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>",
    );
    segment(&mut head, 0xFE, b"GPS 52.52N 13.41E");
    segment(&mut head, 0xDB, &[0u8; 65]);
    segment(&mut head, 0xC0, &[8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
    segment(&mut head, 0xC4, &[0u8; 17]);
    segment(&mut head, 0xDA, &[1, 1, 0, 0, 63, 0]);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&head)?;
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..mib {
        file.write_all(&chunk)?;
    }
    file.write_all(&[0xFF, 0xD9])?;
    file.write_all(b"vendor trailer")?;
    file.flush()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("make") => make(&args[2], args.get(3).map_or(Ok(100), |m| m.parse())?)?,
        Some("strip") => {
            let bytes = std::fs::read(&args[2])?;
            let received = bytes.len();
            let read_peak = peak_rss_kib();
            let start = std::time::Instant::now();
            let stripped = strip(Format::Jpeg, Bytes::from(bytes))?;
            let took = start.elapsed();
            println!(
                "received {received} B, archived {} B, {} pieces removed, {took:.2?}; \
                 peak RSS after reading {} MiB, after stripping {} MiB",
                stripped.bytes.len(),
                stripped.removed,
                read_peak / 1024,
                peak_rss_kib() / 1024
            );
        }
        _ => eprintln!("usage: strip_rss make FILE [MIB] | strip_rss strip FILE"),
    }
    Ok(())
}
