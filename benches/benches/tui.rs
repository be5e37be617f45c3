//! The console's frame: the full dashboard at 200×60 (fixture data, colour and NO_COLOR)
//! against the same area filled by one plain paragraph, in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use mate_tui::{fixture, view};
use ratatui::{backend::TestBackend, widgets::Paragraph, Terminal};

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("tui_frame_200x60");
    for (name, mono) in [("dashboard", false), ("dashboard_no_color", true)] {
        let app = fixture::app(mono);
        let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
        group.bench_function(name, |b| {
            b.iter(|| {
                // A forced full redraw: the diff against the last frame would skip it all.
                terminal.clear().expect("clear");
                terminal.draw(|f| view::draw(f, &app)).expect("draw");
            })
        });
    }
    let text = "mate ".repeat(200 * 60 / 5);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    group.bench_function("baseline_plain_paragraph", |b| {
        b.iter(|| {
            terminal.clear().expect("clear");
            terminal
                .draw(|f| f.render_widget(Paragraph::new(text.as_str()), f.area()))
                .expect("draw");
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
