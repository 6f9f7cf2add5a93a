//! `tsp-islands volunteer`.

use crate::island::TspIsland;

/// `tsp-islands volunteer`: a volunteer host with the island type linked in.
pub fn volunteer(args: &g2_volunteer::VolunteerArgs) -> Result<(), String> {
    g2_volunteer::init_logging();
    let cfg = g2_volunteer::VolunteerConfig::resolve(args).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(async {
        g2_volunteer::Volunteer::serve(&cfg, |b| b.register::<TspIsland>())
            .await
            .map_err(|e| e.to_string())
    })
}
