//! Applies thinpatch patches the way subsecond does, with the standard library only:
//! `dlopen` the patch, slide both images by their `main` symbol, and send every hot call
//! through the rebased old → new address map.
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::RwLock;

use crate::json::{self, Json};

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}
const RTLD_NOW: c_int = 2;
#[cfg(target_os = "macos")]
const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;
#[cfg(not(target_os = "macos"))]
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// Runtime address of each original function → runtime address of its newest version.
static TABLE: RwLock<Option<HashMap<usize, usize>>> = RwLock::new(None);

fn symbol(handle: *mut c_void, name: &str) -> usize {
    let c = CString::new(name).unwrap();
    unsafe { dlsym(handle, c.as_ptr()) as usize }
}

/// Runtime address of this program's `main`: the daemon's `aslr_reference` is its static one.
pub fn aslr_reference() -> usize {
    symbol(RTLD_DEFAULT, "main")
}

fn field_u64(table: &Json, name: &str) -> Result<u64, String> {
    table.get(name).and_then(Json::as_u64).ok_or_else(|| format!("jump table has no `{name}`"))
}

/// Apply a subsecond JumpTable: {lib, map, aslr_reference, new_base_address, ifunc_count}.
pub fn apply_jump_table(table: &Json) -> Result<usize, String> {
    let lib = table.get("lib").and_then(Json::as_str).ok_or("jump table has no `lib`")?;
    let aslr = field_u64(table, "aslr_reference")?;
    let new_base = field_u64(table, "new_base_address")?;
    let map = table.get("map").and_then(Json::entries).ok_or("jump table has no `map`")?;
    let clib = CString::new(lib).map_err(|e| e.to_string())?;
    let handle = unsafe { dlopen(clib.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Err(unsafe { CStr::from_ptr(dlerror()) }.to_string_lossy().into_owned());
    }
    let old_main = aslr_reference();
    let new_main = symbol(handle, "main");
    if old_main == 0 || new_main == 0 {
        return Err(format!("`main` not found (program {old_main:#x}, patch {new_main:#x})"));
    }
    let old_slide = old_main.wrapping_sub(aslr as usize);
    let new_slide = new_main.wrapping_sub(new_base as usize);
    let mut rebased = HashMap::with_capacity(map.len());
    for (old, new) in map {
        let old: u64 = old.parse().map_err(|_| format!("bad map key {old}"))?;
        let new = new.as_u64().ok_or("bad map value")?;
        rebased.insert((old as usize).wrapping_add(old_slide), (new as usize).wrapping_add(new_slide));
    }
    let count = rebased.len();
    *TABLE.write().unwrap() = Some(rebased);
    Ok(count)
}

fn current(address: usize) -> usize {
    TABLE.read().unwrap().as_ref().and_then(|m| m.get(&address).copied()).unwrap_or(address)
}

/// A hot call: runs the newest version of `f`.
pub fn call<A, R>(f: fn(A) -> R, arg: A) -> R {
    let target = current(f as usize);
    let f: fn(A) -> R = unsafe { std::mem::transmute(target) };
    f(arg)
}

/// A hot call of a function without arguments.
pub fn call0<R>(f: fn() -> R) -> R {
    let target = current(f as usize);
    let f: fn() -> R = unsafe { std::mem::transmute(target) };
    f()
}

/// The subscribe request, one JSON line.
fn subscribe_request() -> String {
    format!(
        "{{\"type\":\"subscribe\",\"seq\":1,\"pid\":{},\"aslr_reference\":{}}}\n",
        std::process::id(),
        aslr_reference()
    )
}

fn handle_event(line: &str) {
    let Ok(event) = json::parse(line) else {
        println!("BAD-EVENT {line}");
        return;
    };
    let kind = event.get("type").and_then(Json::as_str).unwrap_or("");
    let id = event.get("id").map(Json::display).unwrap_or_default();
    match kind {
        "subscribed" => println!("SUBSCRIBED"),
        "patch-ready" => match event.get("jump_table").ok_or_else(|| "no jump_table".to_string()).and_then(apply_jump_table) {
            Ok(n) => println!("PATCHED id={id} entries={n}"),
            Err(e) => println!("PATCH-ERROR id={id} {e}"),
        },
        "build-started" | "build-failed" | "patch-rejected" | "full-rebuild-required" | "session-reset" => {
            println!("EVENT {kind} id={id}")
        }
        "error" => println!("EVENT error {}", event.get("message").and_then(Json::as_str).unwrap_or("")),
        _ => {}
    }
}

/// Connect to the daemon, subscribe, and apply `patch-ready` events on a background thread.
/// When the daemon goes away the app exits: it lives only as long as its daemon.
pub fn subscribe(socket: &str) -> Result<(), String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writer.write_all(subscribe_request().as_bytes()).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            handle_event(&line);
            std::io::stdout().flush().ok();
        }
        println!("DISCONNECTED");
        std::process::exit(0);
    });
    Ok(())
}
