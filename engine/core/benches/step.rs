//! `step` on the example flows, without plugins.
//! Run: cargo bench -p mcp-flow --bench step

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use mcp_flow::{Conversation, Event, Flow, Machine, NoPlugins, SystemClock};

fn example(name: &str) -> Flow {
    let path = format!(
        "{}/../../examples/flows/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Flow::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn step(c: &mut Criterion) {
    let machine = Machine::new(NoPlugins, SystemClock);

    let order = example("pizza_order");
    let mut asked = Conversation::new("tenant", "c", "u", &order, 0);
    block_on(machine.step(&order, &mut asked, &Event::message("hi")));
    let large = Event::message("large");
    c.bench_function("slot_filling/one_turn", |b| {
        b.iter_batched(
            || asked.clone(),
            |mut conversation| block_on(machine.step(&order, &mut conversation, black_box(&large))),
            BatchSize::SmallInput,
        )
    });

    let turns: Vec<Event> = ["hi", "a large pepperoni", "50", "two", "yes"]
        .into_iter()
        .map(Event::message)
        .collect();
    let fresh = Conversation::new("tenant", "c", "u", &order, 0);
    c.bench_function("slot_filling/whole_order_5_turns", |b| {
        b.iter_batched(
            || fresh.clone(),
            |mut conversation| {
                for event in &turns {
                    block_on(machine.step(&order, &mut conversation, black_box(event)));
                }
                conversation
            },
            BatchSize::SmallInput,
        )
    });

    let greeting = example("greeting");
    let mut waiting = Conversation::new("tenant", "c", "u", &greeting, 0);
    block_on(machine.step(&greeting, &mut waiting, &Event::message("hello")));
    let hours = Event::message("when are you open?");
    c.bench_function("intent/route_one_turn", |b| {
        b.iter_batched(
            || waiting.clone(),
            |mut conversation| {
                block_on(machine.step(&greeting, &mut conversation, black_box(&hours)))
            },
            BatchSize::SmallInput,
        )
    });

    let text = std::fs::read_to_string(format!(
        "{}/../../examples/flows/pizza_order.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    c.bench_function("flow/parse_and_validate", |b| {
        b.iter(|| Flow::from_json(black_box(&text)).unwrap())
    });
}

criterion_group!(benches, step);
criterion_main!(benches);
