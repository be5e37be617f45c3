//! Drawing the model (placeholder while the view is written).

use ratatui::Frame;

use crate::app::App;

pub fn draw(frame: &mut Frame, app: &App) {
    let _ = (frame, app);
}
