// The home page has no live parts; it shows where this server's client endpoint is.
import { $ } from "./common.js";

$("#host").textContent = location.host;
