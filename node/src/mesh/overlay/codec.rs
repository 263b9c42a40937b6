//! The repair protocol's framing: a `u32` big-endian length, then that many bytes, once for
//! the request and once for the response. A frame over the cap is refused from its length
//! prefix alone, before anything is allocated.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

use super::Counters;

/// Bytes of the length prefix.
pub(crate) const PREFIX: usize = 4;

/// A frame longer than its cap; carried inside an [`io::Error`] so the requester can tell
/// it apart from a broken stream.
#[derive(Debug, thiserror::Error)]
#[error("{what} of {len} bytes exceeds the cap of {max} bytes")]
pub(crate) struct TooLarge {
    pub what: &'static str,
    pub len: usize,
    pub max: usize,
}

/// The frame cap rendered as an `io::Error` (kind `InvalidData` on reading, `InvalidInput`
/// on writing).
fn too_large(kind: io::ErrorKind, what: &'static str, len: usize, max: usize) -> io::Error {
    io::Error::new(kind, TooLarge { what, len, max })
}

/// Length-prefixed opaque bytes, with separate caps for requests and responses, counting
/// every byte it moves (prefixes included) into the overlay's traffic counters.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    pub max_request: usize,
    pub max_response: usize,
    pub counters: Arc<Counters>,
}

async fn read_frame<T>(io: &mut T, what: &'static str, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; PREFIX];
    io.read_exact(&mut prefix).await?;
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > max {
        return Err(too_large(io::ErrorKind::InvalidData, what, len, max));
    }
    let mut data = vec![0u8; len];
    io.read_exact(&mut data).await?;
    Ok(data)
}

async fn write_frame<T>(io: &mut T, what: &'static str, max: usize, data: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len()).ok().filter(|_| data.len() <= max);
    let Some(len) = len else {
        return Err(too_large(io::ErrorKind::InvalidInput, what, data.len(), max));
    };
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

fn frame_bytes(data: &[u8]) -> u64 {
    u64::try_from(PREFIX + data.len()).unwrap_or(u64::MAX)
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let data = read_frame(io, "request", self.max_request).await?;
        self.counters.request_bytes_in.fetch_add(frame_bytes(&data), Ordering::Relaxed);
        Ok(data)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let data = read_frame(io, "response", self.max_response).await?;
        self.counters.response_bytes_in.fetch_add(frame_bytes(&data), Ordering::Relaxed);
        Ok(data)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, "request", self.max_request, &req).await?;
        self.counters.request_bytes_out.fetch_add(frame_bytes(&req), Ordering::Relaxed);
        Ok(())
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, "response", self.max_response, &res).await?;
        self.counters.response_bytes_out.fetch_add(frame_bytes(&res), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    fn codec(max_request: usize, max_response: usize) -> Codec {
        Codec { max_request, max_response, counters: Arc::new(Counters::default()) }
    }

    fn proto() -> StreamProtocol {
        StreamProtocol::new("/telemesh/test/repair/2")
    }

    #[test]
    fn a_frame_is_a_big_endian_length_then_the_bytes() -> io::Result<()> {
        let mut c = codec(16, 16);
        let mut out = Cursor::new(Vec::new());
        block_on(c.write_request(&proto(), &mut out, b"abc".to_vec()))?;
        assert_eq!(out.get_ref(), &[0, 0, 0, 3, b'a', b'b', b'c']);
        let mut input = Cursor::new(out.into_inner());
        assert_eq!(block_on(c.read_request(&proto(), &mut input))?, b"abc");
        assert_eq!(c.counters.request_bytes_out.load(Ordering::Relaxed), 7);
        assert_eq!(c.counters.request_bytes_in.load(Ordering::Relaxed), 7);
        Ok(())
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut c = codec(16, 1024);
        // Claims 4 GiB - 1 and carries nothing: refused from the prefix alone.
        let mut input = Cursor::new(vec![0xff, 0xff, 0xff, 0xff]);
        let err = block_on(c.read_request(&proto(), &mut input)).err();
        let inner = err.as_ref().and_then(|e| e.get_ref()).and_then(|e| e.downcast_ref::<TooLarge>());
        assert!(matches!(inner, Some(TooLarge { what: "request", max: 16, .. })), "{err:?}");
        // A response may be bigger than a request.
        let mut input = Cursor::new([&[0u8, 0, 0, 17][..], &[7u8; 17]].concat());
        assert_eq!(block_on(c.read_response(&proto(), &mut input)).ok(), Some(vec![7u8; 17]));
    }

    #[test]
    fn an_oversized_write_is_refused_and_writes_nothing() {
        let mut c = codec(4, 4);
        let mut out = Cursor::new(Vec::new());
        assert!(block_on(c.write_response(&proto(), &mut out, vec![0; 5])).is_err());
        assert!(out.get_ref().is_empty());
        assert_eq!(c.counters.response_bytes_out.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        let mut c = codec(16, 16);
        let mut input = Cursor::new(vec![0, 0, 0, 5, 1, 2]);
        assert!(block_on(c.read_request(&proto(), &mut input)).is_err());
    }
}
