//! `vigil tui`: the terminal dashboard (crate `vigil-tui`) on a running collector.

use vigil_tui::TuiConfig;
use vigil_tui::state::Tab;

use crate::cli::{TuiArgs, TuiView};

pub fn config(args: &TuiArgs) -> anyhow::Result<TuiConfig> {
    let ca_cert = match &args.ca_cert {
        Some(path) => {
            // Read and checked here, so that a wrong file is an error now, not a banner later.
            crate::cli::read_ca_cert(path)?;
            Some(std::fs::read(path)?)
        }
        None => None,
    };
    Ok(TuiConfig {
        url: args.url.clone(),
        token: args.token.clone(),
        ca_cert,
        refresh: args.refresh,
        tab: match args.view {
            TuiView::Overview => Tab::Overview,
            TuiView::Models => Tab::Models,
            TuiView::Gpus => Tab::Gpus,
            TuiView::Traces => Tab::Traces,
            TuiView::Alerts => Tab::Alerts,
        },
    })
}

pub async fn run(args: TuiArgs) -> anyhow::Result<()> {
    if let Some(runs) = args.bench {
        let config = config(&args)?;
        let results = vigil_tui::app::bench(&config, args.bench_range, runs.max(1)).await?;
        println!(
            "{:<10} {:>6} {:>9} {:>9} {:>9}",
            "view", "runs", "p50 ms", "p95 ms", "max ms"
        );
        for (tab, mut times) in results {
            times.sort();
            let at = |q: f64| {
                times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
            };
            println!(
                "{:<10} {:>6} {:>9.1} {:>9.1} {:>9.1}",
                tab.title(),
                times.len(),
                at(0.5),
                at(0.95),
                at(1.0)
            );
        }
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "vigil tui draws on a terminal, and stdout is not one; for scripts use `vigil query` or `vigil alerts`"
        );
    }
    vigil_tui::run(config(&args)?).await?;
    Ok(())
}
