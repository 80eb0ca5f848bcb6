//! Dynamic batching against a real server: concurrent requests are coalesced into forward passes of
//! up to `--max-batch` images, their answers equal single requests bit for bit, and a full queue
//! answers 503 with Retry-After.
//!
//! The classifier head runs each image alone (libtorch's matrix products round a row differently
//! with the row count and, on some CPUs, its position), and the start-up probe
//! ([`serve::Backend::calibrate`]) finds which pass sizes give the backbone's bits of a full pass;
//! other passes run padded with blank images. `--unpadded-batches` skips the probe.
//!
//! Determinism without timing: the first forward pass is held at a gate until the server's own
//! `/metrics` reports every other request admitted to the queue, so the batches that follow are
//! exactly known.

use std::sync::atomic::Ordering;

use crate::common::*;

const PREDICT: &str = "/v1/models/flowers/predict?top_k=3";

#[test]
fn batched_answers_equal_single_answers_bit_for_bit() {
    let (srv, inst) = TestServer::instrumented(2, |a| {
        a.batching.max_batch = 4;
        a.batching.max_wait_ms = 0;
        a.limits.client_concurrency = Some(64);
        a.limits.client_rps = Some(0.0);
    });
    let a = srv.addr;
    const N: u32 = 12;
    let single: Vec<Vec<f32>> = (0..N)
        .map(|i| {
            let r = http(a, "POST", PREDICT, &[], &png(i));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["timing_ms"]["batch_images"], 1);
            probs_by_index(&r.json()["predictions"][0])
        })
        .collect();
    assert!(single.windows(2).any(|w| w[0] != w[1]), "the images give different answers");
    assert_eq!(*inst.calibrations.lock().expect("calibrations"), vec![4], "probed once at start, at --max-batch");
    assert_eq!(*inst.batches.lock().expect("batches"), vec![1; N as usize], "one pass of one image per request");
    inst.batches.lock().expect("batches").clear();

    // Hold the first forward pass, queue N more requests, then let everything run.
    inst.gate.close();
    let first = std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(0)));
    wait_until("the first forward pass reaches the gate", || inst.gate.arrived.load(Ordering::SeqCst) == N as usize + 1);
    let others: Vec<_> = (0..N).map(|i| std::thread::spawn(move || (i, http(a, "POST", PREDICT, &[], &png(i))))).collect();
    wait_for_metric(a, &format!("petal_queue_depth_images{{model=\"flowers\"}} {N}"), &[]);
    inst.gate.open();

    let first = first.join().expect("first request");
    assert_eq!(first.status, 200);
    assert_eq!(probs_by_index(&first.json()["predictions"][0]), single[0]);
    for t in others {
        let (i, r) = t.join().expect("request thread");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["timing_ms"]["batch_images"], 4);
        let got = probs_by_index(&r.json()["predictions"][0]);
        let same_bits = got.iter().zip(&single[i as usize]).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits, "image {i}: batched {got:?} vs single {:?}", single[i as usize]);
    }
    assert_eq!(*inst.batches.lock().expect("batches"), vec![1, 4, 4, 4], "the held request, then 12 queued requests in 3 passes of 4");

    // One multipart request of 6 images runs as passes of 4 and 2: same answers again.
    let files: Vec<(String, Vec<u8>)> = (0..6).map(|i| (format!("{i}.png"), png(i))).collect();
    let parts: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let (ct, body) = multipart(&parts);
    let r = http(a, "POST", PREDICT, &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    for (i, p) in r.json()["predictions"].as_array().expect("predictions").iter().enumerate() {
        let got = probs_by_index(p);
        assert!(got.iter().zip(&single[i]).all(|(a, b)| a.to_bits() == b.to_bits()), "multipart image {i}");
    }
}

#[test]
fn max_wait_gathers_a_batch_and_a_full_batch_runs_at_once() {
    // A lone request waits up to --max-wait-ms for company: the second request, sent once the
    // first is queued, shares its pass (one pass of 2 images, not two of 1).
    let (srv, inst) = TestServer::instrumented(2, |a| {
        a.batching.max_batch = 2;
        a.batching.max_wait_ms = 60_000;
    });
    let a = srv.addr;
    let first = std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(1)));
    wait_for_metric(a, "petal_queue_depth_images{model=\"flowers\"} 1", &[]);
    let second = http(a, "POST", PREDICT, &[], &png(2));
    assert_eq!((first.join().expect("first").status, second.status), (200, 200));
    assert_eq!(second.json()["timing_ms"]["batch_images"], 2);
    assert_eq!(*inst.batches.lock().expect("batches"), vec![2], "one pass of both images");
    drop(srv);
    // A batch that is already full does not wait: with --max-batch 1 and a wait far beyond the
    // request timeout, a lone request is still answered.
    let (srv, inst) = TestServer::instrumented(2, |a| {
        a.batching.max_batch = 1;
        a.batching.max_wait_ms = 600_000;
        a.timeouts.request_timeout_s = 5;
    });
    let r = http(srv.addr, "POST", PREDICT, &[], &png(3));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(*inst.batches.lock().expect("batches"), vec![1]);
}

#[test]
fn a_job_that_would_overflow_a_pass_waits_for_the_next_one() {
    // With --max-batch 4, queued requests of 3 and 2 images (or 1 and 4) are not merged into one
    // pass of 5 (split 4 + 1): the second waits for the next pass, so each request is one pass.
    for (n1, n2) in [(3u32, 2u32), (1, 4)] {
        let (srv, inst) = TestServer::instrumented(2, |a| {
            a.batching.max_batch = 4;
            a.limits.max_images = 4;
        });
        let a = srv.addr;
        inst.gate.close();
        let first = std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(0)));
        wait_until("the first forward pass reaches the gate", || inst.gate.arrived.load(Ordering::SeqCst) == 1);
        let send = move |n: u32| {
            let images: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("{i}.png"), png(i + 1))).collect();
            let parts: Vec<(&str, &[u8])> = images.iter().map(|(name, b)| (name.as_str(), b.as_slice())).collect();
            let (ct, body) = multipart(&parts);
            http(a, "POST", PREDICT, &[("Content-Type", &ct)], &body)
        };
        let one = std::thread::spawn(move || send(n1));
        wait_for_metric(a, &format!("petal_queue_depth_images{{model=\"flowers\"}} {n1}"), &[]);
        let two = std::thread::spawn(move || send(n2));
        wait_for_metric(a, &format!("petal_queue_depth_images{{model=\"flowers\"}} {}", n1 + n2), &[]);
        inst.gate.open();
        for r in [first.join().expect("first"), one.join().expect("one"), two.join().expect("two")] {
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let want = vec![1, n1 as usize, n2 as usize];
        assert_eq!(*inst.batches.lock().expect("batches"), want, "{n1} + {n2} images: one pass per request");
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let (srv, inst) = TestServer::instrumented(2, |a| {
        a.batching.queue = 2;
        a.limits.max_images = 2;
        a.batching.max_batch = 1;
    });
    let a = srv.addr;
    inst.gate.close();
    let running = std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(1)));
    wait_until("the first forward pass reaches the gate", || inst.gate.arrived.load(Ordering::SeqCst) == 1);
    let queued = std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(2)));
    wait_for_metric(a, "petal_queue_depth_images{model=\"flowers\"} 1", &[]);
    // Both images are admitted (one in the pass, one queued: admission comes before queueing):
    // what `--queue` bounds, on /metrics and in the refusal.
    let text = get(a, "/metrics").text();
    assert!(text.lines().any(|l| l == "petal_admitted_images{model=\"flowers\"} 2"), "{text}");
    for _ in 0..3 {
        let r = http(a, "POST", PREDICT, &[], &png(3));
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"]["code"], "overloaded");
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| m.contains("(2 images admitted)")), "{}", r.text());
    }
    let (ct, body) = multipart(&[("a.png", &png(1)), ("b.png", &png(2))]);
    assert_eq!(http(a, "POST", PREDICT, &[("Content-Type", &ct)], &body).status, 503, "two images do not fit either");
    inst.gate.open();
    assert_eq!(running.join().expect("running").status, 200, "admitted requests are not lost");
    assert_eq!(queued.join().expect("queued").status, 200);
    assert_eq!(http(a, "POST", PREDICT, &[], &png(3)).status, 200, "room again");
    let text = get(a, "/metrics").text();
    assert!(text.lines().any(|l| l == "petal_http_requests_total{route=\"/v1/models/{name}/predict\",status=\"503\"} 4"), "{text}");
    assert!(text.lines().any(|l| l == "petal_admitted_images{model=\"flowers\"} 0"), "every admission is released: {text}");
}

#[test]
fn unpadded_batches_skip_the_probe_and_stay_close() {
    let (srv, inst) = TestServer::instrumented(2, |a| {
        a.batching.max_batch = 4;
        a.batching.unpadded_batches = true;
    });
    let (ct, body) = multipart(&[("0.png", &png(0)), ("1.png", &png(1)), ("2.png", &png(2)), ("3.png", &png(3))]);
    let batched = http(srv.addr, "POST", PREDICT, &[("Content-Type", &ct)], &body).json();
    let mut differs = 0;
    for i in 0..4 {
        let single = probs_by_index(&http(srv.addr, "POST", PREDICT, &[], &png(i)).json()["predictions"][0]);
        let got = probs_by_index(&batched["predictions"][i as usize]);
        let close = got.iter().zip(&single).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close, "image {i}: {got:?} vs {single:?}");
        differs += usize::from(got.iter().zip(&single).any(|(a, b)| a.to_bits() != b.to_bits()));
    }
    assert_eq!(*inst.batches.lock().expect("batches"), vec![4, 1, 1, 1, 1], "every pass at its own size");
    assert!(inst.calibrations.lock().expect("calibrations").is_empty(), "no start-up probe");
    eprintln!("unpadded: {differs} of 4 images differ in their last bits between batch 4 and batch 1");
}

#[test]
fn test_time_augmentation_views_are_batched_bit_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inst = Instrumented::new(tiny_backend(dir.path(), "flowers", 2));
    let srv = TestServer::start(
        args(|a| {
            a.batching.max_batch = 4;
            a.batching.max_wait_ms = 0;
            a.limits.client_rps = Some(0.0);
        }),
        vec![inst.clone()],
    );
    let a = srv.addr;
    let plain = http(a, "POST", PREDICT, &[], &png(1));
    assert_eq!(plain.json()["tta"], "none", "the checkpoint records no advice: no augmentation");
    let flip = |i: u32| http(a, "POST", &format!("{PREDICT}&tta=flip"), &[], &png(i));
    let single: Vec<Vec<f32>> = (0..2).map(|i| probs_by_index(&flip(i).json()["predictions"][0])).collect();
    assert_eq!(flip(0).json()["tta"], "flip");
    assert_ne!(single[1], probs_by_index(&plain.json()["predictions"][0]), "flip averages another view in");
    // Two images × 2 views = one pass of 4 rows: each image's answer keeps its bits.
    let files: Vec<(String, Vec<u8>)> = (0..2).map(|i| (format!("{i}.png"), png(i))).collect();
    let parts: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let (ct, body) = multipart(&parts);
    let r = http(a, "POST", &format!("{PREDICT}&tta=flip"), &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["timing_ms"]["batch_images"], 4, "each view is one image of the batch");
    for (i, p) in r.json()["predictions"].as_array().expect("predictions").iter().enumerate() {
        let got = probs_by_index(p);
        assert_eq!(got.len(), 3, "top_k still applies after averaging");
        assert!(got.iter().zip(&single[i]).all(|(a, b)| a.to_bits() == b.to_bits()), "image {i}: {got:?} vs {:?}", single[i]);
    }
    // Five views run as passes of 4 and 1 (padded).
    let five = http(a, "POST", &format!("{PREDICT}&tta=five-crop"), &[], &png(0));
    assert_eq!(five.status, 200, "{}", five.text());
    assert_eq!(five.json()["timing_ms"]["batch_images"], 5);
    let bad = http(a, "POST", &format!("{PREDICT}&tta=mirror"), &[], &png(0));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_tta");
}
