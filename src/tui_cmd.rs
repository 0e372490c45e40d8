//! `vigil tui`: the terminal dashboard (crate `vigil-tui`) on a running collector.

use vigil_tui::TuiConfig;
use vigil_tui::state::Tab;

use crate::cli::{TuiArgs, TuiView};

pub fn config(args: &TuiArgs) -> TuiConfig {
    TuiConfig {
        url: args.url.clone(),
        token: args.token.clone(),
        refresh: args.refresh,
        tab: match args.view {
            TuiView::Overview => Tab::Overview,
            TuiView::Models => Tab::Models,
            TuiView::Gpus => Tab::Gpus,
            TuiView::Traces => Tab::Traces,
            TuiView::Alerts => Tab::Alerts,
        },
    }
}

pub async fn run(args: TuiArgs) -> anyhow::Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "vigil tui draws on a terminal, and stdout is not one; for scripts use `vigil query` or `vigil alerts`"
        );
    }
    vigil_tui::run(config(&args)).await?;
    Ok(())
}
