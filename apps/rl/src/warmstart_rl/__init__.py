"""warmstart-rl: pretraining for control (VPT: IDM -> pseudo-labels -> BC -> SB3 PPO) on gymnasium."""
