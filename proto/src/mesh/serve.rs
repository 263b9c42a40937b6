//! A holder's side of the repair protocol: one response per request, from what the node
//! holds. Bounded: a page of summaries, at most [`MAX_SYMBOL_BYTES`] of symbols.

use super::message::{IndexPart, Request, Response, MAX_PAGE};
use super::Holdings;
use crate::repair::{EncoderCache, EsiRange, Layout};
use crate::window;

/// Most symbol bytes in one response; a requester wanting more asks again.
pub const MAX_SYMBOL_BYTES: usize = 1 << 20;

/// The most symbols of `layout` one response carries.
pub fn max_symbols(layout: &Layout) -> u32 {
    (MAX_SYMBOL_BYTES / layout.symbol_len()).max(1) as u32
}

/// Answers `request` from `holdings`; `encoders` keeps RaptorQ encoders of windows
/// being repaired from us.
pub fn respond(request: &Request, holdings: &dyn Holdings, encoders: &mut EncoderCache) -> Response {
    match request {
        Request::Streams { after } => {
            let mut digests = holdings.streams(*after, MAX_PAGE + 1);
            let more = digests.len() > MAX_PAGE;
            digests.truncate(MAX_PAGE);
            Response::Streams { digests, more }
        }
        Request::Windows { stream, after } => {
            let mut windows = holdings.windows(*stream, *after, MAX_PAGE + 1);
            let more = windows.len() > MAX_PAGE;
            windows.truncate(MAX_PAGE);
            Response::Windows { windows, more }
        }
        Request::Index { window, root, verified } => {
            let Some(held) = holdings.held(*window, root) else { return Response::NotFound };
            let Ok((header, entries)) = window::index(&held.blob) else { return Response::NotFound };
            if *verified {
                match window::outboard(&held.blob).ok().and_then(|tree| IndexPart::verified(&held.blob, &tree)) {
                    Some(part) => Response::Index(part),
                    None => Response::NotFound,
                }
            } else {
                Response::Index(IndexPart::compact(&header, &entries))
            }
        }
        Request::Symbols { window, root, start, count } => {
            // A cached encoder spares loading the window.
            let key = encoder_key(*window, root);
            let encoder = match encoders.get(&key) {
                Some(encoder) => encoder,
                None => {
                    let Some(held) = holdings.held(*window, root) else { return Response::NotFound };
                    let Ok(header) = window::Header::parse(&held.blob) else { return Response::NotFound };
                    let Ok(layout) = Layout::new(usize::from(header.slot_size), header.count as usize) else {
                        return Response::Refused;
                    };
                    match encoders.get_or_build(key, layout, &held.blob[header.prefix_len()..]) {
                        Ok(encoder) => encoder,
                        Err(_) => return Response::Refused,
                    }
                }
            };
            let layout = encoder.layout();
            let range = EsiRange { start: *start, count: (*count).min(max_symbols(&layout)) };
            if u64::from(range.start) < u64::from(layout.slots()) || range.end() > u64::from(crate::repair::ESI_LIMIT) {
                return Response::Refused;
            }
            match encoder.repair(range) {
                Ok(symbols) => {
                    let mut data = Vec::with_capacity(symbols.len() * layout.symbol_len());
                    for s in &symbols {
                        s.write_to(&mut data);
                    }
                    Response::Symbols { data }
                }
                Err(_) => Response::Refused,
            }
        }
        // Offers are for the requester's state machine, not answered from holdings.
        Request::Offer(_) => Response::Refused,
        Request::Statements { window } => {
            let mut list = holdings.statements(*window);
            list.truncate(super::MAX_TABLE_NODES);
            Response::Statements(list)
        }
        Request::Provenance { window, root } => match holdings.held(*window, root) {
            Some(held) => Response::Provenance { table: held.table },
            None => Response::NotFound,
        },
    }
}

/// The key an encoder is cached under: the window and its root, so that a cached encoder
/// answers only a request naming both, as a loaded one does.
fn encoder_key(window: super::WindowId, root: &window::Root) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&window.stream.key_prefix());
    h.update(&window.start.to_be_bytes());
    h.update(root);
    *h.finalize().as_bytes()
}
