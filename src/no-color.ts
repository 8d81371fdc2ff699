// Imported first by main.ts: help text and logs carry no colour codes when stdout is not a
// terminal (citty decides once, when it is loaded, from NO_COLOR).
import { isTerminal } from "./terminal.ts";

if (!isTerminal(1) && process.env.NO_COLOR === undefined) process.env.NO_COLOR = "1";
