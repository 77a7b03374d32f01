//! The running program's GNU build ID (the `NT_GNU_BUILD_ID` ELF note), read with std only.
//! The daemon matches it against the captured binary, so a patch built for another binary
//! never reaches this process.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
const MAX_NOTE_BYTES: u64 = 1 << 20;

/// This program's build ID in lowercase hex, or None if it has none (or is not ELF).
pub fn current() -> Option<String> {
    of_file(Path::new("/proc/self/exe"))
}

/// The build ID of an ELF file, in lowercase hex.
pub fn of_file(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let mut ident = [0u8; 64];
    file.read_exact(&mut ident).ok()?;
    let elf = ElfHeader::parse(&ident)?;
    for index in 0..elf.ph_count {
        let mut entry = vec![0u8; elf.ph_entry_size];
        file.seek(SeekFrom::Start(elf.ph_offset + index as u64 * elf.ph_entry_size as u64)).ok()?;
        file.read_exact(&mut entry).ok()?;
        let Some((offset, size)) = elf.note_segment(&entry) else { continue };
        if size > MAX_NOTE_BYTES {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut notes).ok()?;
        if let Some(id) = find_build_id(&notes, elf.little_endian) {
            return Some(id);
        }
    }
    None
}

struct ElfHeader {
    little_endian: bool,
    is_64: bool,
    ph_offset: u64,
    ph_entry_size: usize,
    ph_count: usize,
}

impl ElfHeader {
    fn parse(header: &[u8; 64]) -> Option<ElfHeader> {
        if &header[..4] != b"\x7fELF" {
            return None;
        }
        let is_64 = match header[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little_endian = match header[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let read = Reader { little_endian };
        let (ph_offset, ph_entry_size, ph_count) = if is_64 {
            (read.u64(&header[32..40]), read.u16(&header[54..56]), read.u16(&header[56..58]))
        } else {
            (read.u32(&header[28..32]) as u64, read.u16(&header[42..44]), read.u16(&header[44..46]))
        };
        let minimum = if is_64 { 56 } else { 32 };
        if (ph_entry_size as usize) < minimum {
            return None;
        }
        Some(ElfHeader { little_endian, is_64, ph_offset, ph_entry_size: ph_entry_size as usize, ph_count: ph_count as usize })
    }

    /// (file offset, size) of a program header when it is a PT_NOTE segment.
    fn note_segment(&self, entry: &[u8]) -> Option<(u64, u64)> {
        let read = Reader { little_endian: self.little_endian };
        if read.u32(&entry[0..4]) != PT_NOTE {
            return None;
        }
        if self.is_64 {
            Some((read.u64(&entry[8..16]), read.u64(&entry[32..40])))
        } else {
            Some((read.u32(&entry[4..8]) as u64, read.u32(&entry[16..20]) as u64))
        }
    }
}

#[derive(Clone, Copy)]
struct Reader {
    little_endian: bool,
}

impl Reader {
    fn u16(self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.little_endian { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
    }
    fn u64(self, b: &[u8]) -> u64 {
        let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.little_endian { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) }
    }
}

fn align4(n: usize) -> usize {
    n.checked_add(3).map_or(usize::MAX, |n| n & !3)
}

/// Walk a note segment: each note is namesz, descsz, type (4 bytes each), then the name and
/// the descriptor, each padded to 4 bytes.
fn find_build_id(mut notes: &[u8], little_endian: bool) -> Option<String> {
    let read = Reader { little_endian };
    while notes.len() >= 12 {
        let name_size = read.u32(&notes[0..4]) as usize;
        let desc_size = read.u32(&notes[4..8]) as usize;
        let kind = read.u32(&notes[8..12]);
        let name_end = 12usize.checked_add(align4(name_size))?;
        let desc_end = name_end.checked_add(align4(desc_size))?;
        let name = notes.get(12..12usize.checked_add(name_size)?)?;
        let desc = notes.get(name_end..name_end.checked_add(desc_size)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8], little_endian: bool) -> Vec<u8> {
        let word = |n: u32| if little_endian { n.to_le_bytes() } else { n.to_be_bytes() };
        let mut out = Vec::new();
        out.extend_from_slice(&word(name.len() as u32));
        out.extend_from_slice(&word(desc.len() as u32));
        out.extend_from_slice(&word(kind));
        out.extend_from_slice(name);
        out.resize(align4(out.len()), 0);
        out.extend_from_slice(desc);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn finds_the_gnu_build_id_after_other_notes() {
        for little_endian in [true, false] {
            let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0], little_endian); // ABI tag
            notes.extend(note(b"stapsdt\0", 3, &[9; 5], little_endian)); // type 3, wrong owner
            notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xde, 0xad, 0x0b, 0xef, 0x01], little_endian));
            assert_eq!(find_build_id(&notes, little_endian).as_deref(), Some("dead0bef01"));
        }
    }

    #[test]
    fn truncated_or_missing_notes_give_none() {
        let notes = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20], true);
        assert_eq!(find_build_id(&notes[..notes.len() - 4], true), None);
        assert_eq!(find_build_id(&note(b"GNU\0", 1, &[1; 16], true), true), None);
        let mut huge = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 4], true);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find_build_id(&huge, true), None);
        assert_eq!(find_build_id(&[], true), None);
    }

    #[test]
    fn not_an_elf_file_gives_none() {
        assert_eq!(of_file(Path::new("Cargo.toml")), None);
        assert_eq!(of_file(Path::new("/no/such/file")), None);
    }

    /// The test binary itself: compare with the build ID `readelf -n` prints, when available.
    #[test]
    fn reads_this_test_binarys_build_id_like_readelf() {
        let exe = std::env::current_exe().expect("current_exe");
        let ours = of_file(&exe);
        assert_eq!(current(), ours);
        let Ok(out) = std::process::Command::new("readelf").arg("-n").arg(&exe).output() else {
            eprintln!("readelf not installed; only checked that reading does not fail");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = text.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).map(str::to_string);
        assert_eq!(ours, expected);
    }
}
