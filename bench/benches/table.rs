//! Connection-table lookups with 1,000,000 connections held.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tcp::table::{ConnTable, FourTuple};

const CONNECTIONS: u32 = 1_000_000;

fn tuple(n: u32) -> FourTuple {
    FourTuple {
        local_addr: Ipv4Addr::new(198, 18, 0, 1),
        local_port: 443,
        remote_addr: Ipv4Addr::from_bits(0xC613_0000 | (n >> 16)),
        remote_port: n as u16,
    }
}

/// A fixed pseudo-random permutation step, so lookups miss the cache like real traffic.
fn scatter(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) % CONNECTIONS
}

fn table_lookup(c: &mut Criterion) {
    let mut table: ConnTable<u64> = ConnTable::new(CONNECTIONS as usize);
    table.reserve(CONNECTIONS as usize);
    for i in 0..CONNECTIONS {
        let _ = table.insert(tuple(i), u64::from(i));
    }
    let keys: Vec<FourTuple> = (0..4096).map(|i| tuple(scatter(i))).collect();
    let misses: Vec<FourTuple> = (0..4096).map(|i| tuple(CONNECTIONS + i)).collect();

    let mut group = c.benchmark_group("table_1M");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for k in &keys {
                if let Some(id) = table.lookup(black_box(k)) {
                    sum += table.get(id).copied().unwrap_or(0);
                }
            }
            sum
        })
    });
    group.bench_function("lookup_miss", |b| {
        b.iter(|| {
            misses
                .iter()
                .filter(|k| table.lookup(black_box(k)).is_some())
                .count()
        })
    });
    group.bench_function("remove_insert", |b| {
        let mut i = 0u32;
        b.iter(|| {
            for _ in 0..keys.len() {
                let t = tuple(scatter(i));
                if let Some(id) = table.lookup(&t) {
                    let v = table.remove(id).unwrap_or(0);
                    let _ = table.insert(t, v);
                }
                i = i.wrapping_add(1);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, table_lookup);
criterion_main!(benches);
