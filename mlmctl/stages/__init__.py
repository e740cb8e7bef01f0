"""One module per stage; each defines CONFIG, STAGE, INPUT_STAGE and run(ctx). See mlmctl.stage."""
