//! Hygiene of the generated code: `#[shared]` and `#[entry]` expand inside modules with
//! `#![no_implicit_prelude]` (so the generated code may only name absolute paths), and
//! `#[shared(crate = "...")]` works with the facade crate under another name. The generated
//! dispatcher and proxies are then run against an in-process server, so the test checks that
//! the code compiles *and* does what it says.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use manager::{Address, AuthKey, Manager, Register, Registry, Server, ServerConfig, Typeid};

/// Everything here sees no prelude: no `Vec`, `String`, `Option`, `Result`, `Box`, `Clone`...
mod hygienic {
    #![no_implicit_prelude]

    #[derive(::serde::Serialize, ::serde::Deserialize)]
    pub struct Point {
        pub x: i64,
        pub y: i64,
    }

    #[derive(::serde::Serialize, ::serde::Deserialize)]
    pub struct Counter {
        n: i64,
        log: ::std::vec::Vec<u8>,
    }

    #[::manager::shared(method_to_typeid = { child: "Counter" })]
    impl Counter {
        /// Not exposed: it has no receiver.
        pub fn new(n: i64) -> Self {
            Counter {
                n,
                log: ::std::vec::Vec::new(),
            }
        }

        pub fn get(&self) -> i64 {
            self.n
        }

        pub fn add(&mut self, by: i64) -> i64 {
            self.n += by;
            self.n
        }

        /// `&str` travels as a `String`.
        pub fn label(&self, prefix: &str) -> ::std::string::String {
            ::std::format!("{prefix}{}", self.n)
        }

        /// `&[T]` travels as a `Vec<T>`.
        pub fn sum(&self, values: &[i64]) -> i64 {
            ::core::iter::Iterator::sum::<i64>(::core::iter::Iterator::copied(<[i64]>::iter(
                values,
            ))) + self.n
        }

        /// `&[u8]` and `Vec<u8>` travel as blocks of bytes.
        pub fn echo(&self, data: &[u8]) -> ::std::vec::Vec<u8> {
            let mut out = <[u8]>::to_vec(data);
            out.extend_from_slice(&self.log);
            out
        }

        pub fn append(&mut self, data: ::std::vec::Vec<u8>) -> usize {
            self.log.extend_from_slice(&data);
            self.log.len()
        }

        /// `&T` travels as a `T`.
        pub fn offset(&self, point: &Point) -> i64 {
            self.n + point.x * point.y
        }

        pub fn checked_div(&self, by: i64) -> ::core::result::Result<i64, ::std::string::String> {
            match ::core::primitive::i64::checked_div(self.n, by) {
                ::core::option::Option::Some(q) => ::core::result::Result::Ok(q),
                ::core::option::Option::None => ::core::result::Result::Err(
                    ::std::string::ToString::to_string("division by zero"),
                ),
            }
        }

        pub async fn later(&self) -> i64 {
            self.n * 2
        }

        /// `Self` in an argument and a result, outside the impl block in the proxies.
        pub fn swap(&mut self, other: Self) -> Self {
            ::core::mem::replace(self, other)
        }

        /// Mapped to the typeid `Counter`: the caller gets a proxy to a new object.
        pub fn child(&self) -> Counter {
            Counter::new(self.n + 100)
        }
    }

    /// `#[entry]` expands here too (it is only compiled, never run).
    #[::manager::entry]
    pub fn worker(n: i64) -> ::manager::Result<()> {
        let _ = n;
        ::core::result::Result::Ok(())
    }
}

/// The facade crate under another name, with `crate = "..."`.
mod renamed {
    #![no_implicit_prelude]

    use ::manager as m;

    pub struct Gauge {
        level: i64,
    }

    #[m::shared(crate = "m", exposed = [level, raise])]
    impl Gauge {
        pub fn new(level: i64) -> Self {
            Gauge { level }
        }

        pub fn level(&self) -> i64 {
            self.level
        }

        pub fn raise(&mut self, by: i64) {
            self.level += by;
        }

        /// Not in `exposed`: the proxies have no such method.
        pub fn reset(&mut self) {
            self.level = 0;
        }
    }

    #[m::entry(crate = "m")]
    pub fn worker() -> m::Result<()> {
        ::core::result::Result::Ok(())
    }
}

const COUNTER: Typeid<hygienic::CounterProxy> = Typeid::new("counter");
const GAUGE: Typeid<renamed::GaugeProxy, (i64,)> = Typeid::new("gauge");

#[test]
fn generated_code_runs_against_a_server() -> manager::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let authkey = AuthKey::from("k");

    let mut registry = Registry::new();
    registry.register(Register::shared("counter", hygienic::Counter::new(5)))?;
    registry.register(Register::<hygienic::Counter>::new("Counter"))?;
    registry.register(Register::factory("gauge", |(level,): (i64,)| {
        renamed::Gauge::new(level)
    }))?;

    let (server, address) = runtime.block_on(async {
        let server = Server::bind(
            registry,
            &Address::local_tcp(),
            authkey.clone(),
            ServerConfig::default(),
        )
        .await?;
        let address = server.address().clone();
        Ok::<_, manager::Error>((server, address))
    })?;
    let stop = server.shutdown_handle();
    let serving = runtime.spawn(server.serve_forever());

    let counter = runtime.block_on(async {
        let manager = Manager::connect(&address, &authkey).await?;

        // The async proxy of the no-prelude impl block.
        let counter = manager.create(&COUNTER, ()).await?;
        assert_eq!(counter.get().await?, 5);
        assert_eq!(counter.add(2).await?, 7);
        assert_eq!(counter.label("n=").await?, "n=7");
        assert_eq!(counter.sum(&[1, 2, 3]).await?, 13);
        assert_eq!(counter.append(vec![1, 2]).await?, 2);
        assert_eq!(counter.echo(&[9]).await?, vec![9, 1, 2]);
        assert_eq!(counter.offset(&hygienic::Point { x: 2, y: 3 }).await?, 13);
        assert_eq!(counter.checked_div(7).await?, Ok(1));
        assert_eq!(
            counter.checked_div(0).await?,
            Err("division by zero".to_string())
        );
        assert_eq!(counter.later().await?, 14);
        let old = counter.swap(hygienic::Counter::new(40)).await?;
        assert_eq!(old.get(), 7);
        assert_eq!(counter.get().await?, 40);
        let child: hygienic::CounterProxy = counter.child().await?;
        assert_eq!(child.get().await?, 140);
        assert_eq!(counter.get().await?, 40, "the child is another object");

        // The proxy of the impl block that names the crate `m`.
        let gauge = manager.create(&GAUGE, (3,)).await?;
        gauge.raise(4).await?;
        assert_eq!(gauge.level().await?, 7);

        Ok::<_, manager::Error>(counter)
    })?;

    // The blocking proxy, from a thread outside the runtime.
    let counter = counter.into_blocking();
    assert_eq!(counter.add(1)?, 41);
    assert_eq!(counter.label("n=")?, "n=41");
    assert_eq!(
        counter.echo(&[5])?,
        vec![5],
        "the swapped-in counter has an empty log"
    );
    let child: hygienic::CounterBlockingProxy = counter.child()?;
    assert_eq!(child.get()?, 141);
    drop((counter, child));

    // The method left out of `exposed` is still an ordinary method of the type.
    let mut gauge = renamed::Gauge::new(9);
    gauge.reset();
    assert_eq!(gauge.level(), 0);

    stop.shutdown();
    runtime
        .block_on(serving)
        .expect("the server task panicked")?;
    Ok(())
}
