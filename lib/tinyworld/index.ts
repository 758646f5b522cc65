// The tiny world: procedural subjects, scenes and renderer (see DESIGN.md section 5).
export * from "./subjects.ts";
export * from "./scenes.ts";
export * from "./render.ts";
export * from "./grid.ts";
